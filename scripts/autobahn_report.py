#!/usr/bin/env python3
"""Summarises an Autobahn|Testsuite run of scripts/autobahn.sh.

Usage: autobahn_report.py RUN_DIR CONFORMANCE_MD WRITE(0|1) STRICT(0|1)

Prints, per role, the counts of each behaviour by case group, lists every case
that is not OK/NON-STRICT/INFORMATIONAL or whose close behaviour is not OK, and
cross-checks the listener's own annotation (server role): a case in which the
suite expects the connection to be failed (expected close code other than
1000) must have produced a note of severity error, and a case that expects a
normal close must have produced none.
"""
import collections, glob, json, os, re, sys

run, doc, write, strict = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "1"
GOOD = {"OK", "NON-STRICT", "INFORMATIONAL"}


def key(c):
    return [int(x) for x in c.split(".")]


def load(role):
    p = os.path.join(run, "reports", role, "index.json")
    if not os.path.exists(p):
        return None
    idx = json.load(open(p))
    return next(iter(idx.values())) if idx else {}


def table(cases):
    groups = collections.OrderedDict()
    for c in sorted(cases, key=key):
        g = c.split(".")[0]
        groups.setdefault(g, collections.Counter())
        groups[g][cases[c]["behavior"]] += 1
        groups[g]["close " + cases[c]["behaviorClose"]] += 1
    return groups


def bad_cases(cases):
    return [c for c in sorted(cases, key=key)
            if cases[c]["behavior"] not in GOOD or cases[c]["behaviorClose"] not in ("OK", "INFORMATIONAL")]


def cross_check(cases):
    """Pairs connection N of the listener's summary log with the N-th case run."""
    log = os.path.join(run, "server-annotation.log")
    if not os.path.exists(log):
        return ["no server-annotation.log"]
    errors = collections.defaultdict(int)
    codes_of = collections.defaultdict(set)
    conns = []
    for line in open(log, errors="replace"):
        parts = line.split()
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        conn = int(parts[0])
        # Connections without a request (the script's port probe) are not cases.
        if parts[3:4] == ["request"]:
            conns.append(conn)
        found = re.findall(r"\berror:([a-z0-9-]+)", line)
        errors[conn] += len(found)
        codes_of[conn].update(found)
        # `N c2s 0 request "GET / HTTP/1.1" valid` (or `invalid (400 due: ...)`).
        if parts[3:4] == ["request"] and not line.rstrip().endswith(" valid"):
            errors[conn] += 1
    order = sorted(cases, key=key)
    if len(conns) != len(order):
        return [f"cannot pair cases with connections: {len(order)} cases, {len(conns)} connections"]
    findings = []
    for conn, case in zip(sorted(conns), order):
        rep = os.path.join(run, "reports", "servers", cases[case]["reportfile"])
        r = json.load(open(rep))
        codes = (r.get("expectedClose") or {}).get("closeCode") or []
        must_fail = bool(codes) and 1000 not in codes
        if must_fail and errors[conn] == 0:
            findings.append(f"{case}: the suite expects the connection failed ({codes}) but the annotation raised no error note")
        if not must_fail and errors[conn] > 0 and r["behavior"] == "OK":
            if codes_of[conn] == {"data-after-close"}:
                # The suite sends data after its Close and expects it ignored; the
                # RFC forbids sending it (5.5.1), so the note is right and the
                # listener, having closed, ignores the data.
                explained.append(f"{case}: data-after-close noted (the suite sends data after its Close; RFC 6455 5.5.1 forbids it; ignored as expected)")
            else:
                findings.append(f"{case}: a valid case, yet the annotation raised {errors[conn]} error note(s): {sorted(codes_of[conn])}")
    return findings


explained = []
out = []
exit_bad = False
for role, title, how in (("servers", "Server role", "wstest -m fuzzingclient against `kinetid-wsdump listen --echo`"),
                         ("clients", "Client role", "wstest -m fuzzingserver against `examples/autobahn_client.rs` (the handshake, decoder, client-role session, permessage-deflate and encoder of emulate-device)")):
    cases = load(role)
    if cases is None:
        print(f"{title}: no report found")
        continue
    beh = collections.Counter(v["behavior"] for v in cases.values())
    clo = collections.Counter(v["behaviorClose"] for v in cases.values())
    print(f"{title}: {len(cases)} cases, behavior {dict(beh)}, close {dict(clo)}")
    bad = bad_cases(cases)
    if bad:
        exit_bad = True
        print("  not OK: " + " ".join(bad))
    out.append(f"## {title}\n\n{how}: {len(cases)} cases.\n")
    out.append("| group | OK | NON-STRICT | INFORMATIONAL | FAILED | other | close OK | close other |")
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for g, c in table(cases).items():
        other = sum(v for k, v in c.items() if not k.startswith("close ") and k not in ("OK", "NON-STRICT", "INFORMATIONAL", "FAILED"))
        cother = sum(v for k, v in c.items() if k.startswith("close ") and k not in ("close OK",))
        out.append(f"| {g}.* | {c['OK']} | {c['NON-STRICT']} | {c['INFORMATIONAL']} | {c['FAILED']} | {other} | {c['close OK']} | {cother} |")
    out.append("")
    out.append("Cases not OK: " + (", ".join(bad) if bad else "none") + "\n")
    if role == "servers":
        f = cross_check(cases)
        # An annotation that disagrees with the suite fails a strict run too.
        if f:
            exit_bad = True
        print("  annotation cross-check: " + ("every case consistent" if not f else f"{len(f)} finding(s)"))
        for x in f:
            print("    " + x)
        for x in explained:
            print("    explained: " + x)
        out.append("Annotation cross-check (a case the suite expects to fail must raise an error note; a valid case none): "
                   + ("every case consistent.\n" if not f else "\n\n" + "\n".join("- " + x for x in f) + "\n"))
        if explained:
            out.append("Explained:\n\n" + "\n".join("- " + x for x in explained) + "\n")

if write and out:
    text = open(doc).read() if os.path.exists(doc) else ""
    start, end = "<!-- autobahn:begin -->", "<!-- autobahn:end -->"
    block = start + "\n" + "\n".join(out) + "\n" + end
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text + "\n" + block + "\n"
    open(doc, "w").write(text)
    print(f"wrote {doc}")
sys.exit(1 if strict and exit_bad else 0)
