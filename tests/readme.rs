//! The README's pasted outputs are what the tool prints, to the byte: every
//! fenced block that starts with `$ kinetid-wsdump replay ...` is run and
//! compared. A last line `...` means the rest of the output is elided.

mod common;

use common::{bin, root};

#[test]
fn readme_examples_are_verbatim() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut checked = 0;
    let mut lines = readme.lines();
    while let Some(l) = lines.next() {
        if l.trim_start() != "```" {
            continue;
        }
        let block: Vec<&str> = lines
            .by_ref()
            .take_while(|l| l.trim_start() != "```")
            .collect();
        let Some(cmd) = block
            .first()
            .and_then(|f| f.strip_prefix("$ kinetid-wsdump "))
        else {
            continue;
        };
        // `| tail -n +N` is the one shell form the examples use.
        let (cmd_args, skip) = match cmd.split_once(" | tail -n +") {
            Some((a, n)) => (a, n.trim().parse::<usize>().unwrap() - 1),
            None => (cmd, 0),
        };
        let args: Vec<&str> = cmd_args.split_whitespace().collect();
        let out = std::process::Command::new(bin())
            .args(&args)
            .current_dir(root())
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let got = String::from_utf8_lossy(&out.stdout);
        let want = &block[1..];
        let (want, elided) = match want.last() {
            Some(&"...") => (&want[..want.len() - 1], true),
            _ => (want, false),
        };
        let got_lines: Vec<&str> = got.lines().skip(skip).collect();
        if elided {
            assert!(
                got_lines.len() >= want.len() && got_lines[..want.len()] == *want,
                "README block `{cmd}` differs from the output:\n{got}"
            );
        } else {
            assert_eq!(
                got_lines, want,
                "README block `{cmd}` differs from the output"
            );
        }
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} README examples found");
}
