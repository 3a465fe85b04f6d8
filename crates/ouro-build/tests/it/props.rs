//! `parse` never panics, whatever the input.

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let r = ouro_build::pipeline::parse("p.yml", &bytes);
        if let Err(d) = r {
            prop_assert!(!d.is_empty());
        }
    }

    #[test]
    fn never_panics_on_yamlish_text(
        text in "(jobs|on|steps|run|needs|env|  |- |: |\\[|\\]|\\{|\\}|&a |\\*a|<<|\\$\\{\\{|\\}\\}|'|\"|#|!|\n|a|b|1|true|~|,){0,80}"
    ) {
        let r = ouro_build::pipeline::parse("p.yml", text.as_bytes());
        if let Err(d) = r {
            prop_assert!(!d.is_empty());
            for x in &d {
                prop_assert!(x.line >= 1 && x.col >= 1);
                // Rendering never panics either.
                let _ = x.render(Some(&text));
            }
        }
    }

    #[test]
    fn never_panics_on_job_shaped_text(
        id in "[a-z.]{1,6}",
        key in "(steps|stpes|needs|runs-on|if|uses|timeout-minutes|strategy)",
        value in "(\\[\\]|x|\\{run: a\\}|\\[\\{run: b\\}\\]|0|\\$\\{\\{ a|\\{matrix: \\{a: \\[1,2\\]\\}\\})",
    ) {
        let text = format!("jobs:\n  {id}:\n    {key}: {value}\n    steps:\n      - run: x\n");
        let _ = ouro_build::pipeline::parse("p.yml", text.as_bytes());
    }
}
