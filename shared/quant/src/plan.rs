//! Which scheme each tensor gets, decided from its name, size and dtype (REFERENCE.md §4.1, §5.9,
//! §5.11): small tensors pass through, large control tensors stay f32, the rest follow the rule of
//! their category (`embed`, `attn`, `mlp`, `other`, by the records' `classify_param`) unless an
//! override pattern names them first.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::dtype::DType;
use crate::rows::LITE_PERCENTILES;

/// How one large float tensor is quantized.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The baseline's int8 (percentile 99.99984, f32 clip, 1/127 floor), exactly as upstream.
    Int8Upstream,
    /// GPTQ-lite: per-row percentile clip chosen by round-to-nearest error (or SDClip when
    /// `clip_sigmas` is set: then it is plain round-to-nearest with SDClip scales).
    Lite,
    /// Full-Hessian GPTQ; clip by SDClip (`clip_sigmas`) or the percentile search.
    Gptq,
    /// Keep as fp16.
    Fp16,
    /// Keep in its own dtype.
    Keep,
}

/// A category's (or an override's) scheme.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Rule {
    pub method: Method,
    /// Integer width, 2..=8 (`int8_upstream` is always 8).
    pub bits: u8,
    /// SDClip's k: row scale = k·std(row)/R. `None` = percentile search.
    pub clip_sigmas: Option<f64>,
    /// Percentile candidates of the search (1.0 = row maximum).
    pub percentiles: Vec<f64>,
    /// Magnitude pruning before quantization: the fraction (in [0, 1)) of each matrix's entries,
    /// those of smallest |w|, set to 0 ([`crate::prune`]). 0 = off. Matrices only; a quantized
    /// tensor of another shape is not pruned.
    pub prune: f64,
}

impl Default for Rule {
    fn default() -> Self {
        Rule {
            method: Method::Int8Upstream,
            bits: 8,
            clip_sigmas: None,
            percentiles: LITE_PERCENTILES.to_vec(),
            prune: 0.0,
        }
    }
}

/// A rule for the tensors whose name matches a glob pattern (`blocks.*.mlp.proj.weight`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Override {
    pub pattern: String,
    pub rule: Rule,
}

/// What small tensors (numel ≤ `small_numel`) become.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SmallFloat {
    /// The baseline: control tensors f32, other f32/bf16 tensors fp16 (§4.1).
    Upstream,
    /// The records from R0322 on: every small float tensor fp16 (§5.8).
    Fp16,
}

/// The routing of every tensor (the quantize-pack params, minus compression and the size cap).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Routing {
    pub small_numel: usize,
    pub small_float: SmallFloat,
    /// Name substrings of control tensors (kept f32).
    pub control_patterns: Vec<String>,
    pub embed: Rule,
    pub attn: Rule,
    pub mlp: Rule,
    pub other: Rule,
    /// Checked in order before the categories; the first match wins.
    pub overrides: Vec<Override>,
    /// When set, replaces `clip_sigmas` of the attn and mlp rules (the one-knob clip sweep).
    pub clip_sigmas: Option<f64>,
    /// When set, replaces `prune` of the four category rules (the records prune every large
    /// matrix); an override keeps its own.
    pub prune: Option<f64>,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            small_numel: 65_536,
            small_float: SmallFloat::Upstream,
            control_patterns: pgolf_evaluator::CONTROL_PATTERNS.map(String::from).to_vec(),
            embed: Rule::default(),
            attn: Rule::default(),
            mlp: Rule::default(),
            other: Rule::default(),
            overrides: vec![],
            clip_sigmas: None,
            prune: None,
        }
    }
}

/// The decision for one tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Stored as raw values of this dtype.
    Raw(DType),
    Quantize(Rule),
}

/// The records' `classify_param`.
pub fn category(name: &str) -> &'static str {
    if name.contains("tok_emb") || name.contains("lm_head") {
        "embed"
    } else if name.contains(".mlp.") {
        "mlp"
    } else if name.contains(".attn.") || name.contains(".proj.") {
        "attn"
    } else {
        "other"
    }
}

impl Routing {
    /// Checks every rule once, before any work.
    pub fn validate(&self) -> Result<()> {
        let mut rules: Vec<(String, &Rule)> = vec![
            ("embed".into(), &self.embed),
            ("attn".into(), &self.attn),
            ("mlp".into(), &self.mlp),
            ("other".into(), &self.other),
        ];
        for o in &self.overrides {
            glob::Pattern::new(&o.pattern)
                .with_context(|| format!("overrides: bad pattern {:?}", o.pattern))?;
            rules.push((format!("override {:?}", o.pattern), &o.rule));
        }
        for (what, r) in rules {
            if !(2..=8).contains(&r.bits) {
                bail!("{what}: bits {} outside 2..=8", r.bits);
            }
            if r.method == Method::Int8Upstream && r.bits != 8 {
                bail!("{what}: int8_upstream is 8 bits, not {}", r.bits);
            }
            if let Some(k) = r.clip_sigmas.or(self.clip_sigmas) {
                if !(k.is_finite() && k > 0.0) {
                    bail!("{what}: clip_sigmas must be positive, got {k}");
                }
            }
            if r.percentiles.is_empty() || r.percentiles.iter().any(|p| !(*p > 0.0 && *p <= 1.0)) {
                bail!("{what}: percentiles must be a non-empty list in (0, 1]");
            }
            if !(0.0..1.0).contains(&r.prune) {
                bail!(
                    "{what}: prune must be a fraction in [0, 1), got {}",
                    r.prune
                );
            }
            if r.prune > 0.0 && matches!(r.method, Method::Fp16 | Method::Keep) {
                bail!(
                    "{what}: prune applies to quantized matrices, not to method {:?}",
                    r.method
                );
            }
        }
        if let Some(p) = self.prune.filter(|p| !(0.0..1.0).contains(p)) {
            bail!("prune must be a fraction in [0, 1), got {p}");
        }
        Ok(())
    }

    fn is_control(&self, name: &str) -> bool {
        self.control_patterns
            .iter()
            .any(|p| name.contains(p.as_str()))
    }

    /// The decision for tensor `name` of `numel` elements held in `dtype`.
    pub fn decide(&self, name: &str, numel: usize, dtype: DType) -> Decision {
        if numel <= self.small_numel {
            let keep_f32 = self.small_float == SmallFloat::Upstream && self.is_control(name);
            return Decision::Raw(if keep_f32 { DType::F32 } else { DType::F16 });
        }
        if self.is_control(name) {
            return Decision::Raw(DType::F32);
        }
        let matched = self
            .overrides
            .iter()
            .find(|o| glob::Pattern::new(&o.pattern).is_ok_and(|p| p.matches(name)));
        let cat = category(name);
        let mut rule = match (matched, cat) {
            (Some(o), _) => o.rule.clone(),
            (None, "embed") => self.embed.clone(),
            (None, "attn") => self.attn.clone(),
            (None, "mlp") => self.mlp.clone(),
            (None, _) => self.other.clone(),
        };
        if matched.is_none() && matches!(cat, "attn" | "mlp") && self.clip_sigmas.is_some() {
            rule.clip_sigmas = self.clip_sigmas;
        }
        if let (None, Some(p)) = (matched, self.prune) {
            rule.prune = p;
        }
        match rule.method {
            Method::Fp16 => Decision::Raw(DType::F16),
            Method::Keep => Decision::Raw(dtype),
            _ => Decision::Quantize(rule),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_routing_follows_upstream() {
        let r = Routing::default();
        assert_eq!(
            r.decide("skip_weights", 2048, DType::F32),
            Decision::Raw(DType::F32)
        );
        assert_eq!(
            r.decide("blocks.0.attn.q_gain", 8, DType::F32),
            Decision::Raw(DType::F32)
        );
        assert_eq!(
            r.decide("blocks.0.norm.weight", 512, DType::Bf16),
            Decision::Raw(DType::F16)
        );
        assert_eq!(
            r.decide("tok_emb.weight", 524_288, DType::Bf16),
            Decision::Quantize(Rule::default())
        );
        assert_eq!(
            r.decide("blocks.0.mlp.fc.weight", 524_288, DType::F32),
            Decision::Quantize(Rule::default())
        );
        assert_eq!(
            r.decide("blocks.0.attn_scale_big", 70_000, DType::F32),
            Decision::Raw(DType::F32)
        );
        let fp16 = Routing {
            small_float: SmallFloat::Fp16,
            ..Routing::default()
        };
        assert_eq!(
            fp16.decide("skip_weights", 2048, DType::F32),
            Decision::Raw(DType::F16)
        );
    }

    #[test]
    fn overrides_then_categories_then_the_clip_knob() {
        let gptq6 = Rule {
            method: Method::Gptq,
            bits: 6,
            clip_sigmas: Some(12.85),
            ..Rule::default()
        };
        let r = Routing {
            attn: gptq6.clone(),
            mlp: gptq6.clone(),
            embed: Rule {
                method: Method::Gptq,
                bits: 8,
                clip_sigmas: Some(20.0),
                ..Rule::default()
            },
            overrides: vec![Override {
                pattern: "blocks.1.mlp.*".into(),
                rule: Rule {
                    method: Method::Lite,
                    bits: 5,
                    ..Rule::default()
                },
            }],
            clip_sigmas: Some(13.0),
            ..Routing::default()
        };
        r.validate().unwrap();
        let big = 262_144;
        let Decision::Quantize(q) = r.decide("blocks.0.attn.c_q.weight", big, DType::F32) else {
            panic!()
        };
        assert_eq!(
            (q.method, q.bits, q.clip_sigmas),
            (Method::Gptq, 6, Some(13.0))
        );
        let Decision::Quantize(q) = r.decide("blocks.1.mlp.fc.weight", big, DType::F32) else {
            panic!()
        };
        assert_eq!((q.method, q.bits, q.clip_sigmas), (Method::Lite, 5, None));
        let Decision::Quantize(q) = r.decide("tok_emb.weight", big, DType::Bf16) else {
            panic!()
        };
        assert_eq!((q.bits, q.clip_sigmas), (8, Some(20.0)));
        assert_eq!(category("blocks.3.attn.proj.weight"), "attn");
        assert_eq!(category("blocks.3.mlp.proj.weight"), "mlp");
    }

    #[test]
    fn invalid_rules_are_refused() {
        let bad = Routing {
            mlp: Rule {
                bits: 9,
                ..Rule::default()
            },
            ..Routing::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("mlp: bits 9"));
        let bad = Routing {
            attn: Rule {
                method: Method::Int8Upstream,
                bits: 6,
                ..Rule::default()
            },
            ..Routing::default()
        };
        assert!(bad.validate().is_err());
        let bad = Routing {
            clip_sigmas: Some(-1.0),
            ..Routing::default()
        };
        assert!(bad.validate().is_err());
        for (bad, what) in [
            (
                Routing {
                    mlp: Rule {
                        prune: 1.0,
                        ..Rule::default()
                    },
                    ..Routing::default()
                },
                "mlp: prune must be a fraction in [0, 1), got 1",
            ),
            (
                Routing {
                    embed: Rule {
                        method: Method::Fp16,
                        prune: 0.1,
                        ..Rule::default()
                    },
                    ..Routing::default()
                },
                "embed: prune applies to quantized matrices, not to method Fp16",
            ),
            (
                Routing {
                    prune: Some(-0.1),
                    ..Routing::default()
                },
                "prune must be a fraction in [0, 1), got -0.1",
            ),
        ] {
            assert_eq!(bad.validate().unwrap_err().to_string(), what);
        }
    }

    #[test]
    fn the_prune_knob_sets_every_category_but_not_overrides() {
        let r = Routing {
            embed: Rule {
                method: Method::Fp16,
                ..Rule::default()
            },
            overrides: vec![Override {
                pattern: "blocks.0.mlp.*".into(),
                rule: Rule::default(),
            }],
            prune: Some(0.05),
            ..Routing::default()
        };
        r.validate().unwrap();
        let big = 262_144;
        let prune = |name: &str| match r.decide(name, big, DType::F32) {
            Decision::Quantize(q) => Some(q.prune),
            Decision::Raw(_) => None,
        };
        assert_eq!(prune("blocks.1.attn.c_q.weight"), Some(0.05));
        assert_eq!(prune("blocks.1.mlp.fc.weight"), Some(0.05));
        assert_eq!(prune("blocks.0.extra.weight"), Some(0.05));
        assert_eq!(prune("blocks.0.mlp.fc.weight"), Some(0.0));
        // A raw (fp16) embedding stays raw: the knob prunes only what is quantized.
        assert_eq!(prune("tok_emb.weight"), None);
    }
}
