//! The TOML configuration: the example file is the default, and every validation rule
//! refuses a bad input with a message naming the field, what is allowed, and where.

use triage::*;

#[test]
fn example_file_parses_to_exactly_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/triage.example.toml");
    assert_eq!(
        SchedulerConfig::from_path(path).unwrap(),
        SchedulerConfig::default()
    );
}

#[test]
fn an_empty_file_is_the_defaults() {
    assert_eq!(
        SchedulerConfig::from_toml_str("").unwrap(),
        SchedulerConfig::default()
    );
}

fn error(text: &str) -> ConfigError {
    SchedulerConfig::from_toml_str(text).expect_err(text)
}

#[test]
fn unknown_keys_are_refused_with_the_nearest_key() {
    let e = error("bucket_width_ms = 10\nmax_wiat_ms = 5\n");
    assert_eq!(e.field, "max_wiat_ms");
    assert_eq!(e.location, Some((2, 1)));
    assert!(e.expected.contains("did you mean `max_wait_ms`?"), "{e}");
    let e = error("[preemption]\nenabeld = false\n");
    assert_eq!(e.field, "preemption.enabeld");
    assert!(e.expected.contains("did you mean `enabled`?"), "{e}");
    let e = error("[[classes]]\nname = \"A\"\nvllm_priority = [0, 0]\nring_capacty = 8\n");
    assert_eq!(e.field, "classes[0].ring_capacty");
    assert_eq!(e.location, Some((4, 1)));
    assert!(e.expected.contains("did you mean `ring_capacity`?"), "{e}");
    let e = error("[tenants]\nweights = 1\n");
    assert_eq!(e.field, "tenants");
}

#[test]
fn wrong_types_name_the_field_and_position() {
    let e = error("[engine]\nwatermark = \"high\"\n");
    assert_eq!(
        (e.field.as_str(), e.location),
        ("engine.watermark", Some((2, 13)))
    );
    assert!(e.found.contains("expected f64"), "{e}");
    let e = error("shards = -1\n");
    assert_eq!(e.field, "shards");
    assert!(e.to_string().starts_with("line 1, column 10: "), "{e}");
}

/// One failing input per rule of `SchedulerConfig::validate`, with its message.
#[test]
fn every_rule_has_its_message() {
    let classes = |extra: &str| {
        format!("[[classes]]\nname = \"HIGH\"\nvllm_priority = [0, 0]\n[[classes]]\nname = \"LOW\"\nvllm_priority = [1, 9]\npromote_after_ms = 20000\n{extra}")
    };
    /// (TOML text, field, expected message, location)
    type Case<'a> = (String, &'a str, &'a str, Option<(u32, u32)>);
    let cases: Vec<Case> = vec![
        (
            "classes = []".into(),
            "classes",
            "expected 1 to 8 classes, found 0",
            Some((1, 1)),
        ),
        (
            classes("[[classes]]\nname = \"low\"\nvllm_priority = [10, 10]\n"),
            "classes[2].name",
            "a name unique among classes (classes[1] is \"LOW\")",
            Some((9, 1)),
        ),
        (
            classes("[[classes]]\nname = \" \"\nvllm_priority = [10, 10]\n"),
            "classes[2].name",
            "a non-empty name",
            Some((9, 1)),
        ),
        (
            classes("[[classes]]\nname = \"X\"\nvllm_priority = [9, 12]\n"),
            "classes[2].vllm_priority",
            "a range disjoint from classes[1].vllm_priority",
            Some((10, 1)),
        ),
        (
            classes("[[classes]]\nname = \"X\"\nvllm_priority = [12, 10]\n"),
            "classes[2].vllm_priority",
            "[low, high] with low <= high",
            Some((10, 1)),
        ),
        (
            "[[classes]]\nname = \"HIGH\"\nvllm_priority = [0, 0]\npromote_after_ms = 5\n".into(),
            "classes[0].promote_after_ms",
            "none: the top class has nowhere to go",
            Some((4, 1)),
        ),
        (
            classes(
                "[[classes]]\nname = \"X\"\nvllm_priority = [10, 10]\npromote_after_ms = 30000\n",
            ),
            "classes[2].promote_after_ms",
            "less than classes[1].promote_after_ms (20000): thresholds grow with urgency",
            Some((11, 1)),
        ),
        (
            classes("[[classes]]\nname = \"X\"\nvllm_priority = [10, 10]\npromote_after_ms = 0\n"),
            "classes[2].promote_after_ms",
            "at least 1 ms",
            Some((11, 1)),
        ),
        (
            classes("").replace("20000", "70000"),
            "max_wait_ms",
            "more than every promote_after_ms (classes[1] has 70000)",
            None,
        ),
        (
            classes("ring_capacity = 1000\n"),
            "classes[1].ring_capacity",
            "a power of two from 2 to 1048576",
            Some((8, 1)),
        ),
        (
            classes("ring_capacity = 1\n"),
            "classes[1].ring_capacity",
            "a power of two from 2 to 1048576",
            Some((8, 1)),
        ),
        (
            classes("queue_capacity = 0\n"),
            "classes[1].queue_capacity",
            "at least 1",
            Some((8, 1)),
        ),
        (
            "bucket_width_ms = 0".into(),
            "bucket_width_ms",
            "1 to 60000",
            Some((1, 1)),
        ),
        (
            "max_wait_ms = 10000".into(),
            "max_wait_ms",
            "more than every promote_after_ms (classes[1] has 40000)",
            Some((1, 1)),
        ),
        (
            "queue_timeout_ms = 1000".into(),
            "queue_timeout_ms",
            "more than max_wait_ms (60000)",
            Some((1, 1)),
        ),
        (
            "shards = 4096".into(),
            "shards",
            "0 (auto) to 1024",
            Some((1, 1)),
        ),
        (
            "[preemption]\nmin_class_gap = 0".into(),
            "preemption.min_class_gap",
            "at least 1",
            Some((2, 1)),
        ),
        (
            "[preemption]\nmax_victims_per_step = 0".into(),
            "preemption.max_victims_per_step",
            "at least 1 when preemption is enabled",
            Some((2, 1)),
        ),
        (
            "[engine]\nblock_size = 0".into(),
            "engine.block_size",
            "1 to 4096",
            Some((2, 1)),
        ),
        (
            "[engine]\ntotal_blocks = 0".into(),
            "engine.total_blocks",
            "at least 1",
            Some((2, 1)),
        ),
        (
            "[engine]\nmax_model_len = 0".into(),
            "engine.max_model_len",
            "at least 1",
            Some((2, 1)),
        ),
        (
            "engine.watermark = 0.5".into(),
            "engine.watermark",
            "a fraction in [0, 0.5)",
            Some((1, 8)),
        ),
        (
            "[[slo.classes]]\nttft = { bound_ms = 500, quantile = 1.5 }\n[[slo.classes]]\n[[slo.classes]]\n".into(),
            "slo.classes[0].ttft.quantile",
            "strictly between 0 and 1",
            Some((2, 26)),
        ),
        (
            "[[slo.classes]]\n[[slo.classes]]\n".into(),
            "slo.classes",
            "3 entries, one per scheduler class",
            Some((1, 1)),
        ),
    ];
    for (text, field, expected, location) in cases {
        let e = error(&text);
        assert_eq!(e.field, field, "{text}\n{e}");
        assert!(
            e.expected.contains(expected) || e.to_string().contains(expected),
            "{text}\n{e}\nwanted: {expected}"
        );
        assert_eq!(e.location, location, "{text}\n{e}");
    }
}

#[test]
fn missing_file_is_a_typed_error() {
    let e = SchedulerConfig::from_path("/nonexistent/triage.toml").unwrap_err();
    assert_eq!(e.field, "<file>");
    assert!(e.found.contains("/nonexistent/triage.toml"));
}

#[test]
fn fairness_rules_name_the_field_and_its_line() {
    let text = "[fairness]\nenabled = true\n\n[[fairness.tenants]]\nid = 7\nweight = 2.0\n\n[[fairness.tenants]]\nid = 8\nweight = -1.0\n";
    let e = error(text);
    assert_eq!(e.field, "fairness.tenants[1].weight");
    assert_eq!(e.location, Some((10, 1)));
    assert!(e.expected.contains("more than 0"), "{e}");

    let e = error("[fairness]\nmax_tenants = 0\n");
    assert_eq!(
        (e.field.as_str(), e.location),
        ("fairness.max_tenants", Some((2, 1)))
    );

    let e = error("[fairness]\nprompt_token_weight = 0.0\noutput_token_weight = 0.0\n");
    assert_eq!(e.field, "fairness.output_token_weight");

    let e = error(
        "[[fairness.tenants]]\nid = 3\nweight = 1.0\n[[fairness.tenants]]\nid = 3\nweight = 1.0\n",
    );
    assert_eq!(e.field, "fairness.tenants[1].id");
    assert!(e.expected.contains("fairness.tenants[0]"), "{e}");

    let e = error("[fairness]\nmax_tenants = 1\n[[fairness.tenants]]\nid = 1\nweight = 1.0\n[[fairness.tenants]]\nid = 2\nweight = 1.0\n");
    assert_eq!(e.field, "fairness.tenants");

    let e = error("[fairness]\nenabeld = true\n");
    assert!(e.expected.contains("did you mean `enabled`?"), "{e}");

    let ok = SchedulerConfig::from_toml_str(
        "[fairness]\nenabled = true\n[[fairness.tenants]]\nid = 7\nweight = 2.5\n",
    )
    .unwrap();
    assert!(ok.fairness.enabled);
    assert_eq!(
        ok.fairness.tenants,
        vec![TenantWeight { id: 7, weight: 2.5 }]
    );
}

/// A file that leaves `[[slo.classes]]` out gives each class the default targets of the
/// default class with its name (case as class names: ignored), and none to other names.
/// It used to be given the three default entries, so any class count but 3 failed.
#[test]
fn slo_targets_left_out_follow_the_class_names() {
    let two = "[[classes]]\nname = \"HIGH\"\nvllm_priority = [0, 0]\n\
               [[classes]]\nname = \"low\"\nvllm_priority = [1, 9]\npromote_after_ms = 1000\n";
    let cfg = SchedulerConfig::from_toml_str(two).unwrap();
    assert_eq!(cfg.slo.classes, vec![ClassSlo::high(), ClassSlo::low()]);
    // The same with a `[slo]` table that sets other keys.
    let cfg = SchedulerConfig::from_toml_str(&format!("{two}[slo]\nenabled = false\n")).unwrap();
    assert_eq!(cfg.slo.classes, vec![ClassSlo::high(), ClassSlo::low()]);
    assert!(!cfg.slo.enabled);

    let names = "[[classes]]\nname = \"interactive\"\nvllm_priority = [0, 0]\n\
                 [[classes]]\nname = \"Medium\"\nvllm_priority = [1, 1]\n\
                 [[classes]]\nname = \"batch\"\nvllm_priority = [2, 2]\n\
                 [[classes]]\nname = \"bulk\"\nvllm_priority = [3, 3]\n";
    let cfg = SchedulerConfig::from_toml_str(names).unwrap();
    assert_eq!(
        cfg.slo.classes,
        vec![
            ClassSlo::default(),
            ClassSlo::medium(),
            ClassSlo::default(),
            ClassSlo::default()
        ]
    );
    // Given entries are taken as they are, by position.
    let given = format!(
        "{two}[[slo.classes]]\n[[slo.classes]]\ne2e = {{ bound_ms = 5, quantile = 0.5 }}\n"
    );
    let cfg = SchedulerConfig::from_toml_str(&given).unwrap();
    assert_eq!(cfg.slo.classes[0], ClassSlo::default());
    assert_eq!(cfg.slo.classes[1].e2e, Some(SloTarget::new(5, 0.5)));
}

/// A wrong number of `[[slo.classes]]` entries names the line of the entries, and the
/// rule for leaving them out.
#[test]
fn a_wrong_slo_class_count_is_located() {
    let two = "[[classes]]\nname = \"A\"\nvllm_priority = [0, 0]\n\
               [[classes]]\nname = \"B\"\nvllm_priority = [1, 1]\n";
    let e = error(&format!(
        "{two}\n[[slo.classes]]\n[[slo.classes]]\n[[slo.classes]]\n"
    ));
    assert_eq!(e.field, "slo.classes");
    assert_eq!(e.location, Some((8, 1)), "{e}");
    assert!(
        e.expected
            .starts_with("2 entries, one per scheduler class (or none"),
        "{e}"
    );
    assert_eq!(e.found, "3");
    let e = error(&format!("{two}[slo]\nenabled = true\nclasses = [{{}}]\n"));
    assert_eq!(
        (e.field.as_str(), e.location),
        ("slo.classes", Some((9, 1))),
        "{e}"
    );
    // An explicit empty list is given, not left out: refused, not defaulted.
    let e = error(&format!("{two}[slo]\nclasses = []\n"));
    assert_eq!(
        (e.field.as_str(), e.location),
        ("slo.classes", Some((8, 1))),
        "{e}"
    );
}
