//! The mirror's front page, `DIR/index.html`: a static page (no script) that shows a visitor
//! the channels, the release each points at and when it was built, its size, links to its files,
//! and how to use the mirror from Nix. Links are relative, so the page works under whatever
//! address the mirror is served from; dates are absolute, so the page stays true between runs.

use std::fmt::Write as _;

use crate::progress::human_bytes;
use crate::status::MirrorStatus;

/// The page's name in the mirror directory.
pub const FILE: &str = "index.html";

/// What the page says beyond the mirror's state.
#[derive(Clone, Debug, Default)]
pub struct PageOptions {
    /// The public keys (`name:base64`) the served narinfos are signed by, for `trusted-public-keys`.
    pub trusted_keys: Vec<String>,
}

/// The HTML of the front page for `status`.
pub fn render(status: &MirrorStatus, opts: &PageOptions) -> String {
    let mut h = String::new();
    h.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>NixOS mirror</title>\n<style>\n\
         body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}\n\
         table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3em .6em;\
         border-bottom:1px solid #ddd;vertical-align:top}\n\
         code,pre{background:#f4f4f4;padding:.1em .3em}pre{padding:.6em;overflow-x:auto}\n\
         .incomplete{color:#a00}\n</style>\n</head>\n<body>\n<h1>NixOS mirror</h1>\n",
    );
    let _ = writeln!(
        h,
        "<p>Channels and the binary cache of NixOS releases, mirrored and verified against the \
         signatures of the upstream cache.{}</p>",
        match status.last_sync {
            Some(t) => format!(
                " Last complete sync: <time datetime=\"{}\">{}</time>.",
                iso8601(t),
                iso8601(t)
            ),
            None => String::new(),
        }
    );

    h.push_str("<h2>Channels</h2>\n");
    if status.channels.is_empty() {
        h.push_str("<p>No channel is released yet.</p>\n");
    } else {
        h.push_str(
            "<table>\n<thead><tr><th>Channel</th><th>Release</th><th>Built</th>\
             <th>Closure</th><th>Files</th></tr></thead>\n<tbody>\n",
        );
        for c in &status.channels {
            let channel = escape(&c.channel);
            let _ = write!(
                h,
                "<tr><td><a href=\"channels/{channel}/\">{channel}</a></td>"
            );
            match &c.release {
                Some(r) if c.complete => {
                    let _ = write!(h, "<td>{}</td>", escape(r));
                }
                Some(r) => {
                    let _ = write!(
                        h,
                        "<td class=\"incomplete\">{} (incomplete)</td>",
                        escape(r)
                    );
                }
                None => h.push_str("<td class=\"incomplete\">none</td>"),
            }
            match c.built_at {
                Some(t) => {
                    let when = iso8601(u64::try_from(t).unwrap_or(0));
                    let _ = write!(h, "<td><time datetime=\"{when}\">{when}</time></td>");
                }
                None => h.push_str("<td></td>"),
            }
            let _ = write!(
                h,
                "<td>{} paths, {}{}</td><td>",
                c.closure_paths,
                human_bytes(c.closure_bytes),
                if c.missing_paths > 0 {
                    format!(" ({} missing upstream)", c.missing_paths)
                } else {
                    String::new()
                }
            );
            for f in &c.files {
                let name = escape(&f.name);
                let _ = write!(
                    h,
                    "<a href=\"channels/{channel}/{name}\">{name}</a> ({})<br>",
                    human_bytes(f.bytes)
                );
            }
            h.push_str("</td></tr>\n");
        }
        h.push_str("</tbody>\n</table>\n");
    }

    h.push_str("<h2>Using this mirror</h2>\n");
    h.push_str(
        "<p>As a binary cache, in <code>/etc/nix/nix.conf</code> (or <code>nix.settings</code> \
         on NixOS), with this page's address in place of <code>MIRROR</code>:</p>\n<pre>",
    );
    h.push_str("substituters = MIRROR/binary_cache https://cache.nixos.org\n");
    if !opts.trusted_keys.is_empty() {
        let keys: Vec<String> = opts.trusted_keys.iter().map(|k| escape(k)).collect();
        let _ = writeln!(h, "trusted-public-keys = {}", keys.join(" "));
    }
    h.push_str("</pre>\n");
    if let Some(c) = status.channels.first() {
        let channel = escape(&c.channel);
        let _ = write!(
            h,
            "<p>As a channel:</p>\n<pre>nix-channel --add MIRROR/channels/{channel} nixos\n\
             nix-channel --update</pre>\n"
        );
    }
    if let Some(root) = &status.ipfs_root {
        let root = escape(root);
        let _ = writeln!(
            h,
            "<p>Over IPFS: the whole mirror is <code>/ipfs/{root}</code>.</p>"
        );
    }
    let _ = writeln!(
        h,
        "<p>The mirror takes {} on disk: {} NARs in its binary cache.</p>",
        human_bytes(status.disk_bytes),
        status.cache.nars
    );
    h.push_str("</body>\n</html>\n");
    h
}

/// `s` with the characters that mean something in HTML replaced by entities.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Unix seconds as an RFC 3339 UTC date and time, e.g. `2026-12-03T15:27:00Z`.
fn iso8601(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_names_is_escaped_and_dates_are_rfc3339() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
