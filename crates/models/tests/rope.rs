//! RoPE against hand-computed values (generator: `scripts/reference/rope.py`).

use candle_core::{DType, Device, Tensor};
use switchyard_models::rope::{mla_softmax_mscale, rope_frequencies};
use switchyard_models::{LmConfig, Rope, RopeScaling, YarnScaling};

/// `x = [1, 2, 3, 4]`, head_dim 4, theta 10000 (frequencies 1 and 0.01).
const X: [f64; 4] = [1.0, 2.0, 3.0, 4.0];
const AT_POS_1: [f64; 4] = [
    -1.9841106485555495,
    1.959900667496664,
    2.4623779024123156,
    4.019799668334994,
];
const AT_POS_3: [f64; 4] = [
    -1.413352520780047,
    1.8791180666879925,
    -2.828857481741469,
    4.058191135400942,
];

fn rotate(pos: usize, offset: usize) -> Vec<f64> {
    let rope = Rope::new(4, 8, 10_000.0, DType::F64, &Device::Cpu).unwrap();
    // rows at positions offset..=pos, all equal to X; read back the row at `pos`
    let rows = pos - offset + 1;
    let x = Tensor::from_vec(X.repeat(rows), (1, 1, rows, 4), &Device::Cpu).unwrap();
    let y = rope.apply(&x, offset).unwrap();
    y.narrow(2, rows - 1, 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

#[test]
fn rope_matches_hand_computed_values() {
    // first element at position 1: x0·cos(1) − x2·sin(1)
    assert!((AT_POS_1[0] - (1f64.cos() - 3.0 * 1f64.sin())).abs() < 1e-15);
    for (pos, offset, want) in [
        (1, 0, AT_POS_1),
        (1, 1, AT_POS_1),
        (3, 0, AT_POS_3),
        (3, 2, AT_POS_3),
    ] {
        let got = rotate(pos, offset);
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() < 1e-12,
                "pos {pos} offset {offset}: {got:?} vs {want:?}"
            );
        }
    }
}

#[test]
fn rope_leaves_position_zero_unchanged() {
    assert_eq!(rotate(0, 0), X.to_vec());
}

#[test]
fn rope_rejects_positions_past_the_table() {
    let rope = Rope::new(4, 8, 10_000.0, DType::F32, &Device::Cpu).unwrap();
    let x = Tensor::zeros((1, 1, 2, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(rope.apply(&x, 6).is_ok());
    assert!(rope.apply(&x, 7).is_err());
    assert!(Rope::new(3, 8, 10_000.0, DType::F32, &Device::Cpu).is_err());
}

// ---------------------------------------------------------------------------------------
// RoPE scaling against transformers 5.24. The constants below are the output of
// `.venv-ref/bin/python scripts/reference/rope_scaling.py` (transformers'
// `ROPE_INIT_FUNCTIONS[rope_type]`, i.e. `_compute_yarn_parameters` for YaRN;
// `DeepseekV3RotaryEmbedding` for cos/sin at positions 5 and 37; DeepSeek-V3's
// `yarn_apply_mscale` for the softmax factor). transformers works in f32, Switchyard in
// f64: frequencies agree to a relative 1e-6, cos/sin to 1e-5.
// ---------------------------------------------------------------------------------------

// V3: {'rope_theta': 10000.0, 'rope_type': 'yarn', 'factor': 40.0, 'original_max_position_embeddings': 4096, 'beta_fast': 32, 'beta_slow': 1, 'mscale': 1.0, 'mscale_all_dim': 1.0}
const V3_INV_FREQ: [f64; 32] = [
    1.0,
    0.7498942017555237,
    0.5623413324356079,
    0.4216965138912201,
    0.3162277638912201,
    0.23713736236095428,
    0.17782793939113617,
    0.1333521455526352,
    0.10000000149011612,
    0.07498941570520401,
    0.05623412877321243,
    0.039006926119327545,
    0.026879360899329185,
    0.01837814413011074,
    0.012447956018149853,
    0.0083345090970397,
    0.005500000435858965,
    0.0035619973205029964,
    0.002249365206807852,
    0.0013705134624615312,
    0.0007905694073997438,
    0.0004149904125370085,
    0.00017782794020604342,
    3.333803397254087e-05,
    2.499999936844688e-05,
    1.8747354260995053e-05,
    1.4058532542549074e-05,
    1.0542412383074407e-05,
    7.905694474175107e-06,
    5.928434347879374e-06,
    4.445698323252145e-06,
    3.3338035336782923e-06,
];
const V3_ATTENTION_FACTOR: f64 = 1.0;
const V3_SOFTMAX_FACTOR: f64 = 1.8738542070926265;
const V3_COS_5: [f64; 32] = [
    0.28366219997406006,
    -0.8208616375923157,
    -0.9460792541503906,
    -0.5121501088142395,
    -0.010342338122427464,
    0.37566062808036804,
    0.6300802826881409,
    0.7858290672302246,
    0.8775825500488281,
    0.9305270314216614,
    0.9607312679290771,
    0.9810409545898438,
    0.9909823536872864,
    0.9957810044288635,
    0.9980637431144714,
    0.9991317987442017,
    0.9996218681335449,
    0.9998413920402527,
    0.9999367594718933,
    0.9999765157699585,
    0.9999921917915344,
    0.9999978542327881,
    0.9999995827674866,
    1.0,
    1.0,
    1.0,
    1.0,
    1.0,
    1.0,
    1.0,
    1.0,
    1.0,
];
const V3_SIN_5: [f64; 32] = [
    -0.9589242935180664,
    -0.5711271166801453,
    0.32393527030944824,
    0.8588959574699402,
    0.9999465346336365,
    0.9267573356628418,
    0.7765299677848816,
    0.6184437274932861,
    0.4794255495071411,
    0.3662232756614685,
    0.27748051285743713,
    0.19380050897598267,
    0.13399258255958557,
    0.09176145493984222,
    0.06219960376620293,
    0.04166048765182495,
    0.02749653533101082,
    0.017809046432375908,
    0.01124658901244402,
    0.006852513644844294,
    0.0039528366178274155,
    0.0020749506074935198,
    0.0008891395991668105,
    0.00016669016622472554,
    0.00012499999138526618,
    9.373677312396467e-05,
    7.029266271274537e-05,
    5.271206100587733e-05,
    3.9528473280370235e-05,
    2.964217128464952e-05,
    2.2228490706766024e-05,
    1.6669016986270435e-05,
];
const V3_COS_37: [f64; 32] = [
    0.7654140591621399,
    -0.8636915683746338,
    -0.37674230337142944,
    -0.9944723844528198,
    0.6479216814041138,
    -0.795662522315979,
    0.9563800096511841,
    0.21983037889003754,
    -0.8481000065803528,
    -0.9334136247634888,
    -0.4880606532096863,
    0.1271945834159851,
    0.5448917150497437,
    0.7775781750679016,
    0.8957973718643188,
    0.9528274536132812,
    0.9793652296066284,
    0.9913277626037598,
    0.9965386390686035,
    0.9987145662307739,
    0.999572217464447,
    0.9998821020126343,
    0.9999783635139465,
    0.9999992251396179,
    0.9999995827674866,
    0.9999997615814209,
    0.9999998807907104,
    0.9999999403953552,
    0.9999999403953552,
    1.0,
    1.0,
    1.0,
];
const V3_SIN_37: [f64; 32] = [
    -0.6435381174087524,
    0.5040207505226135,
    0.9263181090354919,
    0.10499856621026993,
    -0.7617069482803345,
    0.6057401299476624,
    0.2921253740787506,
    -0.9755381345748901,
    -0.5298361778259277,
    0.3588021695613861,
    0.8728097081184387,
    0.9918777942657471,
    0.8385064005851746,
    0.6287862658500671,
    0.44446268677711487,
    0.30351245403289795,
    0.20209835469722748,
    0.13141269981861115,
    0.08313046395778656,
    0.0506872683763504,
    0.029246898368000984,
    0.015354041941463947,
    0.0065795863047242165,
    0.0012335069477558136,
    0.0009249998838640749,
    0.000693652022164315,
    0.000520165718626231,
    0.00039006926817819476,
    0.00029251069645397365,
    0.00021935207769274712,
    0.00016449083341285586,
    0.000123350735520944,
];
// FIXTURE: {'rope_theta': 10000.0, 'rope_type': 'yarn', 'factor': 4.0, 'original_max_position_embeddings': 32, 'beta_fast': 32, 'beta_slow': 1, 'mscale': 1.0, 'mscale_all_dim': 1.0}
const FIXTURE_INV_FREQ: [f64; 8] = [
    1.0,
    0.19764235615730286,
    0.02500000037252903,
    0.007905694656074047,
    0.0024999999441206455,
    0.0007905694656074047,
    0.0002500000118743628,
    7.905694656074047e-05,
];
const FIXTURE_ATTENTION_FACTOR: f64 = 1.0;
const FIXTURE_SOFTMAX_FACTOR: f64 = 1.2964769927807063;
const FIXTURE_COS_5: [f64; 8] = [
    0.28366219997406006,
    0.5501840114593506,
    0.9921976923942566,
    0.9992188215255737,
    0.9999218583106995,
    0.9999921917915344,
    0.9999992251396179,
    0.9999999403953552,
];
const FIXTURE_SIN_5: [f64; 8] = [
    -0.9589242935180664,
    0.8350434303283691,
    0.1246747300028801,
    0.03951818123459816,
    0.012499673292040825,
    0.003952837083488703,
    0.001249999739229679,
    0.00039528473280370235,
];
const FIXTURE_COS_37: [f64; 8] = [
    0.7654140591621399,
    0.5151773691177368,
    0.6018345952033997,
    0.9575229287147522,
    0.9957249164581299,
    0.999572217464447,
    0.9999572038650513,
    0.9999957084655762,
];
const FIXTURE_SIN_37: [f64; 8] = [
    -0.6435381174087524,
    0.8570835590362549,
    0.7986207604408264,
    0.2883571684360504,
    0.09236814826726913,
    0.029246900230646133,
    0.009249867871403694,
    0.0029251028317958117,
];
// PLAIN: {'rope_theta': 1000000.0, 'rope_type': 'yarn', 'factor': 4.0, 'original_max_position_embeddings': 64}
const PLAIN_INV_FREQ: [f64; 4] = [
    1.0,
    0.007905694656074047,
    0.0002500000118743628,
    7.905693564680405e-06,
];
const PLAIN_ATTENTION_FACTOR: f64 = 1.138629436111989;
const PLAIN_SOFTMAX_FACTOR: f64 = 1.0;
const PLAIN_COS_5: [f64; 4] = [
    0.3229861259460449,
    1.1377400159835815,
    1.138628602027893,
    1.13862943649292,
];
const PLAIN_SIN_5: [f64; 4] = [
    -1.0918594598770142,
    0.04499656334519386,
    0.0014232865069061518,
    4.500827344600111e-05,
];
const PLAIN_COS_37: [f64; 4] = [
    0.8715229630470276,
    1.090263843536377,
    1.1385806798934937,
    1.1386293172836304,
];
const PLAIN_SIN_37: [f64; 4] = [
    -0.7327514290809631,
    0.32833194732666016,
    0.010532171465456486,
    0.0003330612671561539,
];
// ODD: {'rope_theta': 500.0, 'rope_type': 'yarn', 'factor': 8.0, 'original_max_position_embeddings': 512, 'beta_fast': 16, 'beta_slow': 2, 'mscale': 0.9, 'mscale_all_dim': 0.5, 'truncate': False}
const ODD_INV_FREQ: [f64; 4] = [
    1.0,
    0.2114742398262024,
    0.016880976036190987,
    0.0011821769876405597,
];
const ODD_ATTENTION_FACTOR: f64 = 1.0753439904810793;
const ODD_SOFTMAX_FACTOR: f64 = 1.218754346981143;
const ODD_COS_5: [f64; 4] = [
    0.30503442883491516,
    0.5281699299812317,
    1.071515679359436,
    1.0753251314163208,
];
const ODD_SIN_5: [f64; 4] = [
    -1.0311734676361084,
    0.9366969466209412,
    0.09065654873847961,
    0.0063561974093317986,
];
const ODD_COS_37: [f64; 4] = [
    0.8230834007263184,
    0.03164798766374588,
    0.8723183274269104,
    1.0743154287338257,
];
const ODD_SIN_37: [f64; 4] = [
    -0.692024827003479,
    1.074878215789795,
    0.6288285255432129,
    0.047021135687828064,
];
// LINEAR: {'rope_theta': 10000.0, 'rope_type': 'linear', 'factor': 2.0}
const LINEAR_INV_FREQ: [f64; 4] = [
    0.5,
    0.05000000074505806,
    0.004999999888241291,
    0.0005000000237487257,
];
const LINEAR_ATTENTION_FACTOR: f64 = 1.0;
const LINEAR_SOFTMAX_FACTOR: f64 = 1.0;
const LINEAR_COS_5: [f64; 4] = [
    -0.8011435866355896,
    0.9689124226570129,
    0.9996874928474426,
    0.9999969005584717,
];
const LINEAR_SIN_5: [f64; 4] = [
    0.5984721183776855,
    0.24740396440029144,
    0.024997394531965256,
    0.002499997615814209,
];
const LINEAR_COS_37: [f64; 4] = [
    0.9395248889923096,
    -0.27559027075767517,
    0.9829362630844116,
    0.9998288750648499,
];
const LINEAR_SIN_37: [f64; 4] = [
    -0.3424806296825409,
    0.9612752199172974,
    0.18394653499126434,
    0.018498944118618965,
];

fn yarn(
    factor: f64,
    original: usize,
    betas: (f64, f64),
    mscales: (Option<f64>, Option<f64>),
    truncate: bool,
) -> RopeScaling {
    RopeScaling::Yarn(YarnScaling {
        factor,
        original_max_seq_len: original,
        beta_fast: betas.0,
        beta_slow: betas.1,
        mscale: mscales.0,
        mscale_all_dim: mscales.1,
        attention_factor: None,
        truncate,
    })
}

struct Case {
    name: &'static str,
    dim: usize,
    theta: f64,
    scaling: RopeScaling,
    inv_freq: &'static [f64],
    attention_factor: f64,
    softmax_factor: f64,
    /// (position, cos, sin) over the first half of the table
    rows: [(usize, &'static [f64], &'static [f64]); 2],
}

fn cases() -> Vec<Case> {
    let real = (Some(1.0), Some(1.0));
    vec![
        Case {
            name: "DeepSeek-V3",
            dim: 64,
            theta: 10_000.0,
            scaling: yarn(40.0, 4096, (32.0, 1.0), real, true),
            inv_freq: &V3_INV_FREQ,
            attention_factor: V3_ATTENTION_FACTOR,
            softmax_factor: V3_SOFTMAX_FACTOR,
            rows: [(5, &V3_COS_5, &V3_SIN_5), (37, &V3_COS_37, &V3_SIN_37)],
        },
        Case {
            name: "fixture",
            dim: 16,
            theta: 10_000.0,
            scaling: yarn(4.0, 32, (32.0, 1.0), real, true),
            inv_freq: &FIXTURE_INV_FREQ,
            attention_factor: FIXTURE_ATTENTION_FACTOR,
            softmax_factor: FIXTURE_SOFTMAX_FACTOR,
            rows: [
                (5, &FIXTURE_COS_5, &FIXTURE_SIN_5),
                (37, &FIXTURE_COS_37, &FIXTURE_SIN_37),
            ],
        },
        Case {
            name: "plain",
            dim: 8,
            theta: 1e6,
            scaling: yarn(4.0, 64, (32.0, 1.0), (None, None), true),
            inv_freq: &PLAIN_INV_FREQ,
            attention_factor: PLAIN_ATTENTION_FACTOR,
            softmax_factor: PLAIN_SOFTMAX_FACTOR,
            rows: [
                (5, &PLAIN_COS_5, &PLAIN_SIN_5),
                (37, &PLAIN_COS_37, &PLAIN_SIN_37),
            ],
        },
        Case {
            name: "odd",
            dim: 8,
            theta: 500.0,
            scaling: yarn(8.0, 512, (16.0, 2.0), (Some(0.9), Some(0.5)), false),
            inv_freq: &ODD_INV_FREQ,
            attention_factor: ODD_ATTENTION_FACTOR,
            softmax_factor: ODD_SOFTMAX_FACTOR,
            rows: [(5, &ODD_COS_5, &ODD_SIN_5), (37, &ODD_COS_37, &ODD_SIN_37)],
        },
        Case {
            name: "linear",
            dim: 8,
            theta: 10_000.0,
            scaling: RopeScaling::Linear { factor: 2.0 },
            inv_freq: &LINEAR_INV_FREQ,
            attention_factor: LINEAR_ATTENTION_FACTOR,
            softmax_factor: LINEAR_SOFTMAX_FACTOR,
            rows: [
                (5, &LINEAR_COS_5, &LINEAR_SIN_5),
                (37, &LINEAR_COS_37, &LINEAR_SIN_37),
            ],
        },
    ]
}

#[test]
fn scaled_frequencies_match_transformers() {
    for c in cases() {
        let (inv, af) = rope_frequencies(c.dim, c.theta, Some(&c.scaling));
        assert_eq!(inv.len(), c.inv_freq.len(), "{}", c.name);
        for (i, (ours, theirs)) in inv.iter().zip(c.inv_freq).enumerate() {
            assert!(
                (ours - theirs).abs() <= 1e-6 * theirs.abs(),
                "{} θ_{i}: {ours} vs transformers {theirs}",
                c.name
            );
        }
        assert!((af - c.attention_factor).abs() < 1e-12, "{}: {af}", c.name);
        let sm = mla_softmax_mscale(Some(&c.scaling));
        assert!((sm - c.softmax_factor).abs() < 1e-12, "{}: {sm}", c.name);
    }
}

#[test]
fn scaled_tables_match_transformers() {
    for c in cases() {
        let rope = Rope::scaled(
            c.dim,
            38,
            c.theta,
            Some(&c.scaling),
            DType::F64,
            &Device::Cpu,
        )
        .unwrap();
        let half = c.dim / 2;
        for (p, cos, sin) in c.rows {
            for (table, want, what) in [(&rope.cos, cos, "cos"), (&rope.sin, sin, "sin")] {
                let row = table.get(p).unwrap().to_vec1::<f64>().unwrap();
                // both halves hold the same values (torch: cat((freqs, freqs)))
                assert_eq!(row[..half], row[half..], "{} {what} row {p}", c.name);
                for (i, (ours, theirs)) in row.iter().zip(want).enumerate() {
                    assert!(
                        (ours - theirs).abs() < 1e-5,
                        "{} {what}[{p}, {i}]: {ours} vs transformers {theirs}",
                        c.name
                    );
                }
            }
        }
    }
}

#[test]
fn unscaled_rope_is_scaling_none() {
    let a = Rope::new(8, 16, 500.0, DType::F64, &Device::Cpu).unwrap();
    let b = Rope::scaled(8, 16, 500.0, None, DType::F64, &Device::Cpu).unwrap();
    let diff = (a.cos - b.cos).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(diff.to_scalar::<f64>().unwrap(), 0.0);
    assert_eq!(b.attention_factor, 1.0);
    // factor 1 changes nothing
    let (inv, af) = rope_frequencies(
        8,
        500.0,
        Some(&yarn(1.0, 64, (32.0, 1.0), (None, None), true)),
    );
    assert_eq!((inv, af), rope_frequencies(8, 500.0, None));
}

#[test]
fn rope_scaling_is_validated_and_optional_in_configs() {
    let with = |s: RopeScaling| LmConfig {
        rope_scaling: Some(s),
        ..Default::default()
    };
    let ok = yarn(4.0, 32, (32.0, 1.0), (Some(1.0), Some(1.0)), true);
    with(ok.clone()).validate().unwrap();
    let RopeScaling::Yarn(y) = ok else {
        unreachable!()
    };
    for (bad, field) in [
        (RopeScaling::Linear { factor: 0.5 }, "rope_scaling.factor"),
        (
            RopeScaling::Yarn(YarnScaling {
                factor: f64::NAN,
                ..y.clone()
            }),
            "rope_scaling.factor",
        ),
        (
            RopeScaling::Yarn(YarnScaling {
                original_max_seq_len: 0,
                ..y.clone()
            }),
            "rope_scaling.original_max_seq_len",
        ),
        (
            RopeScaling::Yarn(YarnScaling {
                beta_fast: 0.5,
                ..y.clone()
            }),
            "rope_scaling.beta_fast",
        ),
        (
            RopeScaling::Yarn(YarnScaling {
                beta_slow: -1.0,
                ..y.clone()
            }),
            "rope_scaling.beta_slow",
        ),
        (
            RopeScaling::Yarn(YarnScaling {
                mscale_all_dim: Some(f64::INFINITY),
                ..y.clone()
            }),
            "rope_scaling.mscale_all_dim",
        ),
        (
            RopeScaling::Yarn(YarnScaling {
                attention_factor: Some(0.0),
                ..y.clone()
            }),
            "rope_scaling.attention_factor",
        ),
    ] {
        let e = with(bad).validate().unwrap_err().to_string();
        assert!(e.contains(&format!("`{field}`")), "{e}");
    }
    // configs written before the field existed still read, as unscaled
    let old = serde_json::to_value(LmConfig::default()).unwrap();
    assert!(old.get("rope_scaling").is_none(), "None is not written");
    let back: LmConfig = serde_json::from_value(old).unwrap();
    assert_eq!(back.rope_scaling, None);
    let cfg = with(RopeScaling::Yarn(y));
    let json = serde_json::to_string(&cfg).unwrap();
    assert!(
        json.contains(r#""rope_scaling":{"type":"yarn","factor":4.0"#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<LmConfig>(&json).unwrap(), cfg);
    let lin: LmConfig =
        serde_json::from_str(r#"{"rope_scaling": {"type": "linear", "factor": 2.0}}"#).unwrap();
    assert_eq!(lin.rope_scaling, Some(RopeScaling::Linear { factor: 2.0 }));
}
