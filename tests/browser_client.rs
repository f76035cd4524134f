//! A WebSocket client page of the developer's own, in headless Chromium:
//! opened from a file it sends `Origin: null`, which `listen` refuses
//! unless `--allow-origin null` lets it connect as a device.

mod common;
use common::*;

/// A page that connects, says hello and writes what came back into the DOM.
fn page(url: &str) -> std::path::PathBuf {
    let dir = root().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("client-page-{}.html", std::process::id()));
    let hello = hello("KN-0000000000C1", &[]);
    std::fs::write(
        &p,
        format!(
            r#"<!doctype html><title>plug</title><pre id=log>start</pre><script>
const log = t => document.getElementById('log').textContent += '\n' + t;
const ws = new WebSocket('{url}', 'kinetid.v1');
ws.onopen = () => {{ log('open'); ws.send({hello:?}); }};
ws.onmessage = e => log('got ' + e.data);
ws.onclose = e => log('closed ' + e.code);
ws.onerror = () => log('error');
</script>"#
        ),
    )
    .unwrap();
    p
}

#[test]
fn a_page_from_a_file_connects_with_allow_origin_null_and_not_without() {
    let Some(chromium) = chromium() else { return };
    for (flags, welcomed) in [(&["--allow-origin", "null"][..], true), (&[][..], false)] {
        let mut args = vec!["--no-console", "--quiet"];
        args.extend_from_slice(flags);
        let l = Listener::start(&args);
        let p = page(&l.url());
        // Virtual time may run out before the real socket has answered
        // (a loaded machine): load again until the page shows an outcome.
        let mut dom = String::new();
        for budget in [3000, 5000, 8000, 12000, 20000] {
            dom = chromium_dom(chromium, &format!("file://{}", p.display()), budget);
            let decided = dom.contains(r#"got {"t":"welcome""#)
                || dom.contains("\nclosed ")
                || dom.contains("\nerror");
            if decided {
                break;
            }
        }
        assert_eq!(
            dom.contains(r#"got {"t":"welcome""#),
            welcomed,
            "{flags:?}: {dom}"
        );
        if !welcomed {
            assert!(!dom.contains("start\nopen"), "{dom}");
        }
        l.stop();
    }
}

#[test]
fn the_refusal_names_the_flag() {
    let l = Listener::start(&["--no-console", "--quiet"]);
    let mut s = raw(&l.addr());
    use std::io::Write;
    s.write_all(upgrade_request("Origin: null\r\n").as_bytes())
        .unwrap();
    let r = String::from_utf8_lossy(&read_all(&mut s)).to_string();
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(r.contains("--allow-origin null"), "{r}");
    // A dev server's origin, allowed by name; another still refused.
    let l2 = Listener::start(&[
        "--no-console",
        "--quiet",
        "--allow-origin",
        "http://localhost:3000",
    ]);
    for (origin, ok) in [
        ("http://localhost:3000", true),
        ("http://localhost:4000", false),
    ] {
        let mut s = raw(&l2.addr());
        s.write_all(upgrade_request(&format!("Origin: {origin}\r\n")).as_bytes())
            .unwrap();
        let mut b = [0u8; 12];
        std::io::Read::read_exact(&mut s, &mut b).unwrap();
        assert_eq!(b.starts_with(b"HTTP/1.1 101"), ok, "{origin}");
    }
    l.stop();
    l2.stop();
}
