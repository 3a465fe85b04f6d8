//! Markdown for item descriptions and comments: CommonMark with tables, strikethrough and task
//! lists, rendered to HTML and then sanitised, because descriptions are written by any project
//! member and shown to every other.

use std::sync::LazyLock;

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS
}

/// One sanitiser for the process: building it allocates its allow-lists.
static SANITISER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut b = ammonia::Builder::default();
    // Only these schemes survive in href/src; relative URLs pass (links to other Ouro pages).
    // `javascript:`, `data:`, `vbscript:` and the rest are dropped with their attribute.
    b.url_schemes(["http", "https", "mailto"].into_iter().collect())
        .link_rel(Some("noopener noreferrer nofollow"))
        // Task list boxes: always a disabled checkbox whatever the source HTML said.
        .add_tags(["input"])
        .add_tag_attribute_values("input", "checked", [""])
        .set_tag_attribute_value("input", "type", "checkbox")
        .set_tag_attribute_value("input", "disabled", "");
    b
});

/// Renders Markdown to sanitised HTML: no scripts, styles, frames, event handlers, or URLs other
/// than http, https, mailto and relative ones; links get `rel="noopener noreferrer nofollow"`.
pub fn render(md: &str) -> String {
    let mut html = String::with_capacity(md.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, Parser::new_ext(md, options()));
    SANITISER.clean(&html).to_string()
}

/// The user names mentioned as `@name` in `md`, in order of first mention, each once.
///
/// A mention is `@` at the start of a word (not `bob@example.com`) followed by a user name
/// (`a-z`, `0-9`, `-`, up to 40, case folded to lower case since names are lower case), not
/// followed by another word character or `@`. Mentions in code spans, code blocks and raw HTML
/// do not count.
pub fn mentions(md: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut in_code_block = 0usize;
    // Adjacent text events are joined: the parser may split one run of text in several.
    let mut text = String::new();
    for event in Parser::new_ext(md, options()) {
        match event {
            Event::Text(t) if in_code_block == 0 => {
                text.push_str(&t);
                continue;
            }
            Event::Start(Tag::CodeBlock(_)) => in_code_block += 1,
            Event::End(TagEnd::CodeBlock) => in_code_block = in_code_block.saturating_sub(1),
            _ => {}
        }
        scan_mentions(&text, &mut out);
        // A code span, tag or break between two text runs separates words.
        text.clear();
    }
    scan_mentions(&text, &mut out);
    out
}

fn scan_mentions(text: &str, out: &mut Vec<String>) {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '-';
    let mut prev: Option<char> = None;
    for (i, c) in text.char_indices() {
        let at_word_start =
            !prev.is_some_and(|p| p.is_alphanumeric() || matches!(p, '_' | '@' | '.' | '-' | '/'));
        prev = Some(c);
        if c != '@' || !at_word_start {
            continue;
        }
        let rest = &text[i + 1..];
        let len = rest.find(|c: char| !is_name(c)).unwrap_or(rest.len());
        let after = rest[len..].chars().next();
        if after.is_some_and(|a| a.is_alphanumeric() || a == '_' || a == '@') {
            continue;
        }
        // A sentence may continue with '-' ("@alice- thanks"); names never end with it.
        let name = rest[..len].trim_end_matches('-');
        let name = name.to_ascii_lowercase();
        // The platform's own rule for user names (length, no leading '-').
        if ouro_core::ids::validate_user_name(&name).is_err() {
            continue;
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Renders and checks that none of `gone` appears (case-insensitive) and all of `kept` does.
    fn check(md: &str, gone: &[&str], kept: &[&str]) -> String {
        let html = render(md);
        let lower = html.to_ascii_lowercase();
        for g in gone {
            assert!(
                !lower.contains(&g.to_ascii_lowercase()),
                "{md:?} -> {html:?} still has {g:?}"
            );
        }
        for k in kept {
            assert!(html.contains(k), "{md:?} -> {html:?} lost {k:?}");
        }
        assert_safe_markup(&html);
        html
    }

    #[test]
    fn commonmark_and_extensions() {
        assert_eq!(
            render("# Title\n\n*a* **b**"),
            "<h1>Title</h1>\n<p><em>a</em> <strong>b</strong></p>\n"
        );
        check("~~old~~ new", &[], &["<del>old</del> new"]);
        check(
            "| a | b |\n|---|---|\n| 1 | 2 |\n",
            &[],
            &["<table>", "<th>a</th>", "<td>2</td>"],
        );
        let html = check("- [x] done\n- [ ] todo\n", &[], &["done", "todo"]);
        // Attribute order is not stable (the sanitiser uses hash maps): compare sets.
        let attr = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        let inputs = |html: &str| -> Vec<Vec<(String, String)>> {
            tags(html)
                .into_iter()
                .filter(|(t, _)| t == "input")
                .map(|(_, mut a)| {
                    a.sort();
                    a
                })
                .collect()
        };
        assert_eq!(
            inputs(&html),
            vec![
                vec![
                    attr("checked", ""),
                    attr("disabled", ""),
                    attr("type", "checkbox")
                ],
                vec![attr("disabled", ""), attr("type", "checkbox")],
            ]
        );
        // Raw inputs can only ever be a disabled checkbox.
        assert_eq!(
            inputs(&render(
                "<input type=text value=x onfocus=alert(1) autofocus>"
            )),
            vec![vec![attr("disabled", ""), attr("type", "checkbox")]]
        );
        check(
            "```rust\nlet x = 1 < 2;\n```",
            &[],
            &["<pre><code>let x = 1 &lt; 2;\n</code></pre>"],
        );
        check("`a<b>`", &[], &["<code>a&lt;b&gt;</code>"]);
        check("> quoted", &[], &["<blockquote>"]);
    }

    #[test]
    fn links_keep_safe_urls_and_get_rel() {
        let html = check(
            "[docs](https://example.com/a?b=1)",
            &[],
            &["href=\"https://example.com/a?b=1\""],
        );
        assert!(
            html.contains(r#"rel="noopener noreferrer nofollow""#),
            "{html}"
        );
        check(
            "[mail](mailto:a@example.com)",
            &[],
            &["href=\"mailto:a@example.com\""],
        );
        check(
            "[item](/demo/items/DEMO-4)",
            &[],
            &["href=\"/demo/items/DEMO-4\""],
        );
        check("[rel](../x)", &[], &["href=\"../x\""]);
        check(
            "<https://example.com>",
            &[],
            &["href=\"https://example.com\""],
        );
        check(
            "![logo](https://example.com/a.png)",
            &[],
            &["src=\"https://example.com/a.png\"", "alt=\"logo\""],
        );
        // Raw anchors get the rel too, replacing target tricks.
        check(
            r#"<a href="https://x.example" rel="opener">x</a>"#,
            &["opener\""],
            &["nofollow"],
        );
    }

    #[test]
    fn xss_payloads() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "hello <script>alert(1)</script> world",
                &["<script", "alert(1)"],
                &["hello", "world"],
            ),
            (
                "<SCRIPT SRC=//evil.example/x.js></SCRIPT>ok",
                &["<script", "evil"],
                &["ok"],
            ),
            (
                "<img src=x onerror=alert(1)>",
                &["onerror", "alert"],
                &["<img src=\"x\""],
            ),
            (
                "[x](javascript:alert(1))",
                &["javascript", "alert"],
                &[">x</a>"],
            ),
            (
                "[x](JaVaScRiPt:alert(1))",
                &["javascript", "alert"],
                &[">x</a>"],
            ),
            (
                "[x]( javascript:alert(1) )",
                &["javascript:", "href"],
                &["x"],
            ),
            // Not a link at all (whitespace in the destination): stays text, no href.
            ("[x](java\tscript:alert(1))", &["href"], &["x"]),
            (
                r#"<a href="&#106;avascript:alert(1)">click</a>"#,
                &["avascript", "alert"],
                &["click"],
            ),
            (
                r#"<a href="&#x6A;avascript&#x3A;alert(1)">click</a>"#,
                &["avascript", "alert"],
                &["click"],
            ),
            ("[x](vbscript:msgbox(1))", &["vbscript"], &["x"]),
            (
                "<svg onload=alert(1)><circle/></svg>text",
                &["<svg", "onload", "alert"],
                &["text"],
            ),
            (
                "<iframe src=\"https://evil.example\"></iframe>after",
                &["<iframe", "evil"],
                &["after"],
            ),
            (
                "<style>body{display:none}</style>visible",
                &["<style", "display"],
                &["visible"],
            ),
            (
                r#"<p style="position:fixed">styled</p>"#,
                &["style="],
                &["styled"],
            ),
            (
                r#"<div onclick="steal()">div</div>"#,
                &["onclick", "steal"],
                &["div"],
            ),
            (
                "![x](data:image/svg+xml;base64,PHN2Zz4=)",
                &["data:", "base64"],
                &["<img", "alt=\"x\""],
            ),
            (
                "[x](data:text/html,<script>alert(1)</script>)",
                &["data:", "<script"],
                &["x"],
            ),
            (
                r#"<img src="data:image/png;base64,AAAA">"#,
                &["data:"],
                &["<img"],
            ),
            (
                "<object data=x.swf></object><embed src=x.swf>obj",
                &["<object", "<embed"],
                &["obj"],
            ),
            (
                "<form action=/x><input name=p><button>go</button></form>",
                &["<form", "<button", "name="],
                &["go"],
            ),
            (
                "<meta http-equiv=refresh content=0;url=https://evil.example>m",
                &["<meta"],
                &["m"],
            ),
            ("<base href=https://evil.example/>b", &["<base"], &["b"]),
            // Unclosed: not HTML to the parser, so it stays visible, escaped text.
            ("<img src=x onerror=alert(1)//", &["<img"], &["&lt;img"]),
            ("<a href='javascript:alert(1)'", &["<a "], &["&lt;a"]),
            ("<script>alert(1)", &["<script", "alert"], &[]),
            (
                "<<script>script>alert(1)<</script>/script>",
                &["<script"],
                &[],
            ),
            (
                "<details open ontoggle=alert(1)>d</details>",
                &["ontoggle"],
                &["d"],
            ),
            (
                "<math><mi xlink:href=\"javascript:alert(1)\">m</mi></math>",
                &["javascript", "xlink"],
                &[],
            ),
            (
                "<input type=text onfocus=alert(1) autofocus>",
                &["onfocus", "type=\"text\"", "autofocus"],
                &[],
            ),
            (
                "[a](https://ok.example \"title\\\" onmouseover=\\\"alert(1)\")",
                &["onmouseover=\""],
                &["https://ok.example"],
            ),
        ];
        for (md, gone, kept) in cases {
            check(md, gone, kept);
        }
    }

    #[test]
    fn mentions_in_text_only() {
        let table: &[(&str, &[&str])] = &[
            ("@alice please review", &["alice"]),
            ("cc @alice, @bob-2 and @alice.", &["alice", "bob-2"]),
            ("(@ci-bot)", &["ci-bot"]),
            ("@Alice", &["alice"]),
            ("mail bob@example.com", &[]),
            ("<bob@example.com>", &[]),
            ("`@alice` in code", &[]),
            ("```\n@alice\n```\n@bob", &["bob"]),
            ("    @indented code\n\n@carol", &["carol"]),
            ("<span>@dave</span>", &["dave"]),
            ("<!-- @eve -->", &[]),
            ("@ alone", &[]),
            ("@@double", &[]),
            ("@alice@mastodon.example", &[]),
            ("@under_score", &[]),
            ("@-dash", &[]),
            ("@trailing- dash", &["trailing"]),
            ("path/@x and a.@y", &[]),
            ("**@bold** _@em_ [@link](/u)", &["bold", "em", "link"]),
            ("> @quoted", &["quoted"]),
            ("- [ ] @task", &["task"]),
            ("@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", &[]), // 41 characters
            ("@ünicode @é", &[]),
        ];
        for (md, want) in table {
            assert_eq!(mentions(md), *want, "{md:?}");
        }
    }

    /// The tags of sanitised HTML with their attributes, lower-cased names. The output of
    /// ammonia is well-formed: tags start with `<name`, values are double-quoted, text `<` is
    /// escaped.
    fn tags(html: &str) -> Vec<(String, Vec<(String, String)>)> {
        let mut out = Vec::new();
        let mut rest = html;
        while let Some(i) = rest.find('<') {
            rest = &rest[i + 1..];
            let name_len = rest
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(rest.len());
            if name_len == 0 {
                continue;
            }
            let name = rest[..name_len].to_ascii_lowercase();
            rest = &rest[name_len..];
            let mut attrs = Vec::new();
            loop {
                rest = rest.trim_start_matches([' ', '/']);
                if rest.is_empty() || rest.starts_with('>') {
                    break;
                }
                let n = rest.find(['=', ' ', '>']).unwrap_or(rest.len());
                let attr = rest[..n].to_ascii_lowercase();
                rest = &rest[n..];
                let mut value = String::new();
                if let Some(r) = rest.strip_prefix("=\"") {
                    let end = r.find('"').unwrap_or(r.len());
                    value = r[..end].to_owned();
                    rest = &r[(end + 1).min(r.len())..];
                }
                attrs.push((attr, value));
            }
            out.push((name, attrs));
        }
        out
    }

    /// Whatever the input, the markup itself has no dangerous tag, handler or URL.
    fn assert_safe_markup(html: &str) {
        const BAD_TAGS: &[&str] = &[
            "script", "style", "iframe", "svg", "math", "object", "embed", "form", "meta", "base",
            "link", "button", "textarea", "select",
        ];
        for (tag, attrs) in tags(html) {
            assert!(!BAD_TAGS.contains(&tag.as_str()), "{html}");
            for (name, value) in attrs {
                assert!(!name.starts_with("on") && name != "style", "{html}");
                if name == "href" || name == "src" {
                    let scheme = url_scheme(&value);
                    assert!(
                        matches!(scheme.as_deref(), None | Some("http" | "https" | "mailto")),
                        "{html}"
                    );
                }
                if tag == "a" && name == "rel" {
                    assert_eq!(value, "noopener noreferrer nofollow", "{html}");
                }
            }
        }
    }

    /// The scheme a browser would see in an attribute value: entities decoded, tabs and
    /// newlines removed, outer spaces trimmed; `None` for a relative URL.
    fn url_scheme(attr: &str) -> Option<String> {
        let mut v = attr
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'");
        // Numeric references, the classic way to hide "javascript:".
        while let Some(i) = v.find("&#") {
            let end = v[i..].find(';').map_or(v.len(), |e| i + e);
            let num = &v[i + 2..end];
            let c = if let Some(hex) = num.strip_prefix(['x', 'X']) {
                u32::from_str_radix(hex, 16).ok()
            } else {
                num.parse().ok()
            };
            let c = c.and_then(char::from_u32).unwrap_or('?');
            v.replace_range(i..(end + 1).min(v.len()), &c.to_string());
        }
        let v = v.replace("&amp;", "&");
        let v: String = v
            .chars()
            .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
            .collect();
        let v = v.trim_matches(|c: char| c <= ' ');
        let colon = v.find(':')?;
        let scheme = &v[..colon];
        let well_formed = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        well_formed.then(|| scheme.to_ascii_lowercase())
    }

    #[test]
    fn url_scheme_helper() {
        assert_eq!(url_scheme("/a/b:c"), None);
        assert_eq!(url_scheme("&lt;img src=x javascript:"), None);
        assert_eq!(url_scheme(" JavaScript:x").as_deref(), Some("javascript"));
        assert_eq!(
            url_scheme("&#106;ava&#x73;cript&#58;x").as_deref(),
            Some("javascript")
        );
        assert_eq!(url_scheme("java\tscript:x").as_deref(), Some("javascript"));
        assert_eq!(url_scheme("https://x").as_deref(), Some("https"));
    }

    #[test]
    fn tag_helper() {
        let t =
            tags(r#"<p>a</p><a href="x" rel="y z">b</a><br/><input disabled="" type="checkbox">"#);
        assert_eq!(t[0], ("p".into(), vec![]));
        assert_eq!(
            t[1].1,
            vec![("href".into(), "x".into()), ("rel".into(), "y z".into())]
        );
        assert_eq!(t[2].0, "br");
        assert_eq!(t[3].1.len(), 2);
    }

    proptest! {
        #[test]
        fn never_panics_and_never_leaks_script(md in "\\PC{0,200}") {
            let html = render(&md);
            assert_safe_markup(&html);
            prop_assert!(!html.to_ascii_lowercase().contains("<script"));
            let _ = mentions(&md);
        }

        #[test]
        fn html_soup_is_clean(md in "(<script>|<img src=x |onerror=|javascript:|\\[x\\]\\(|\\)|<a href=\"|\">|<svg |onload=|`|@al|\\n| |x){0,30}") {
            assert_safe_markup(&render(&md));
        }
    }
}
