//! Simple Mandarin sentences from a lexicon of about a hundred characters. Every character is
//! three UTF-8 bytes (all >= 0x80), so a byte-level model must learn multi-byte structure; the
//! sentence templates (time, subject, place, verb, object) give word order to learn.

use rand::Rng;

use super::{chance, pick};

const SUBJECTS: &[&str] = &[
    "我", "你", "他", "她", "我们", "他们", "老师", "学生", "朋友", "医生", "孩子", "妈妈", "爸爸",
    "同学",
];
/// Verbs paired with objects they take, so "喝咖啡" appears but "喝电脑" does not.
const VERB_OBJECTS: &[(&str, &[&str])] = &[
    ("喜欢", &["音乐", "电影", "中文", "苹果", "咖啡", "猫"]),
    ("看", &["书", "电影", "报纸", "电视"]),
    ("买", &["苹果", "衣服", "电脑", "书", "茶"]),
    ("学习", &["中文", "数学", "历史", "音乐"]),
    ("吃", &["饭", "苹果", "面条", "米饭"]),
    ("喝", &["茶", "咖啡", "水", "牛奶"]),
    ("写", &["信", "汉字", "日记"]),
    ("认识", &["老师", "医生", "朋友"]),
];
const TIMES: &[&str] = &["今天", "明天", "昨天", "现在", "每天", "晚上", "早上"];
const PLACES: &[&str] = &["学校", "家", "北京", "公园", "商店", "图书馆", "饭馆"];
const ADJECTIVES: &[&str] = &["好", "高兴", "忙", "累", "漂亮", "大", "小", "冷", "热"];
const DEGREE: &[&str] = &["很", "非常", "有点", "不"];

pub(super) fn document(rng: &mut impl Rng, target_bytes: usize) -> String {
    let mut out = String::with_capacity(target_bytes + 128);
    while out.len() < target_bytes {
        for _ in 0..rng.random_range(3..7) {
            sentence(rng, &mut out);
        }
        out.push('\n');
    }
    out
}

fn sentence(rng: &mut impl Rng, out: &mut String) {
    let subject = pick(rng, SUBJECTS);
    match rng.random_range(0..10) {
        // 他很忙。
        0 | 1 => {
            out.push_str(subject);
            out.push_str(pick(rng, DEGREE));
            out.push_str(pick(rng, ADJECTIVES));
            out.push('。');
        }
        // 你喝茶吗？
        2 => {
            out.push_str(subject);
            verb_object(rng, out);
            out.push_str("吗？");
        }
        // 我们今天在公园看书。 / 他没有买书。
        _ => {
            if chance(rng, 40) {
                out.push_str(pick(rng, TIMES));
                out.push('，');
            }
            out.push_str(subject);
            if chance(rng, 40) {
                out.push('在');
                out.push_str(pick(rng, PLACES));
            }
            if chance(rng, 20) {
                out.push_str("没有");
            } else if chance(rng, 20) {
                out.push('也');
            }
            verb_object(rng, out);
            out.push('。');
        }
    }
}

fn verb_object(rng: &mut impl Rng, out: &mut String) {
    let (verb, objects) = pick(rng, VERB_OBJECTS);
    out.push_str(verb);
    out.push_str(pick(rng, objects));
}
