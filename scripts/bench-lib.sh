# Shared by the bench scripts (sourced, not run): timing and table helpers.
# RUNS must be set by the caller.

# Median wall time, in seconds, of RUNS runs of a command, output thrown away.
median_time() {
  local ts=()
  for _ in $(seq "$RUNS"); do
    local t0 t1
    t0=$(date +%s.%N); "$@" > /dev/null 2>&1; t1=$(date +%s.%N)
    ts+=("$(echo "$t1 - $t0" | bc -l)")
  done
  printf '%s\n' "${ts[@]}" | sort -g | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}'
}

# "A / B" as a ratio with one decimal: 9.6x.
ratio() { echo "$1 / $2" | bc -l | awk '{printf "%.1fx", $1}'; }

# Install Debian's tshark when missing (no question about capture rights).
need_tshark() {
  command -v tshark >/dev/null && return 0
  echo "installing tshark (Debian package)" >&2
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $sudo debconf-set-selections 2>/dev/null || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q tshark >/dev/null
}
