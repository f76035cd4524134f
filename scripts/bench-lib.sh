# Shared by the bench scripts (sourced, not run): timing and table helpers.
# RUNS must be set by the caller.

# The clock is bash's own EPOCHREALTIME: no process is started to read it
# (a `date` started after the command was timed with it, a millisecond or
# two on a 40 ms run). Its decimal point follows LC_NUMERIC.
LC_NUMERIC=C

# Median wall time, in seconds, of RUNS runs of a command, output thrown away.
median_time() {
  local ts=()
  for _ in $(seq "$RUNS"); do
    local t0 t1
    t0=$EPOCHREALTIME; "$@" > /dev/null 2>&1; t1=$EPOCHREALTIME
    ts+=("$(echo "$t1 - $t0" | bc -l)")
  done
  printf '%s\n' "${ts[@]}" | sort -g | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}'
}

# Median wall times of two commands (function names) run in turn, A B A B
# ..., RUNS times each: "A B" in seconds. In turn, so a noisy moment of a
# shared machine falls on both.
median_pair() {
  local as=() bs=() t0 t1
  for _ in $(seq "$RUNS"); do
    t0=$EPOCHREALTIME; "$1" > /dev/null 2>&1; t1=$EPOCHREALTIME; as+=("$(echo "$t1 - $t0" | bc -l)")
    t0=$EPOCHREALTIME; "$2" > /dev/null 2>&1; t1=$EPOCHREALTIME; bs+=("$(echo "$t1 - $t0" | bc -l)")
  done
  local ma mb
  ma=$(printf '%s\n' "${as[@]}" | sort -g | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}')
  mb=$(printf '%s\n' "${bs[@]}" | sort -g | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}')
  echo "$ma $mb"
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
