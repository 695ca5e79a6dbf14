//! English-like prose from a small grammar (a few hundred words).
//!
//! The learnable structure is the grammar: subject–verb agreement ("the cat sleeps",
//! "the cats sleep", "the cats will sleep"), `a`/`an` before vowels, `Does`/`Do` questions
//! taking the base verb, capitalised sentence starts and regular plural/third-person spelling.

use rand::Rng;

use super::{chance, pick};

const NAMES: &[&str] = &[
    "Alice", "Bruno", "Clara", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira",
    "Liam", "Mara", "Noah", "Olga", "Pavel",
];

const NOUNS: &[&str] = &[
    "cat", "dog", "bird", "horse", "child", "man", "woman", "city", "river", "mountain", "teacher",
    "farmer", "doctor", "student", "king", "queen", "baker", "sailor", "soldier", "painter",
    "writer", "friend", "neighbor", "stranger", "village", "forest", "garden", "house", "road",
    "bridge", "window", "door", "table", "chair", "book", "letter", "story", "song", "boat",
    "ship", "train", "wheel", "stone", "tree", "flower", "apple", "bread", "cup", "lamp", "clock",
    "key", "box", "map", "coin", "ring", "market", "school", "library", "castle", "tower",
    "island", "valley", "field", "lake", "sea", "cloud", "star", "moon", "storm", "fire", "wolf",
    "fox", "mouse", "owl", "fish", "bee", "sheep", "goat", "baby", "lady", "party", "family",
    "glass", "bus", "dish", "engine", "elephant", "umbrella", "orange", "idea",
];

const ADJECTIVES: &[&str] = &[
    "old", "young", "small", "large", "quiet", "loud", "bright", "dark", "happy", "sad", "brave",
    "tired", "clever", "gentle", "strange", "warm", "cold", "green", "red", "blue", "golden",
    "silver", "wooden", "heavy", "empty", "busy", "calm", "proud", "shy", "hungry", "wild",
    "lonely", "careful", "ancient", "narrow", "wide", "deep", "soft", "sharp", "sweet", "bitter",
    "rich", "poor", "famous", "hidden", "broken", "quick", "slow", "tall", "angry", "honest",
    "early", "elegant", "icy", "open", "ugly", "useful",
];

const TRANSITIVE: &[&str] = &[
    "see", "find", "love", "build", "carry", "watch", "follow", "help", "paint", "read", "write",
    "open", "close", "visit", "remember", "forget", "bring", "push", "pull", "catch", "miss",
    "wash", "fix", "teach", "touch", "chase", "feed", "hold", "keep", "leave", "meet", "sell",
    "buy", "draw", "hide", "lift", "call", "greet", "answer", "protect", "marry", "copy", "admire",
];

const INTRANSITIVE: &[&str] = &[
    "sleep", "run", "wait", "sing", "laugh", "dance", "swim", "rest", "shine", "fall", "smile",
    "listen", "travel", "work", "play", "cry", "rise", "shout", "walk", "think", "vanish", "hurry",
    "arrive", "wander", "go",
];

const ADVERBS: &[&str] = &[
    "quickly",
    "slowly",
    "quietly",
    "loudly",
    "gladly",
    "softly",
    "gently",
    "carefully",
    "happily",
    "sadly",
    "again",
    "together",
    "alone",
    "early",
    "late",
    "today",
    "outside",
    "everywhere",
    "at night",
    "all day",
];

const PREPOSITIONS: &[&str] = &[
    "in", "on", "near", "under", "behind", "beside", "across", "through", "into", "above", "with",
    "without", "around", "beyond", "toward",
];

const CONJUNCTIONS: &[&str] = &["and", "but", "because", "while", "so", "although", "when"];
const MODALS: &[&str] = &["will", "can", "must", "should", "may", "could"];
const DET_SINGULAR: &[&str] = &[
    "the", "a", "this", "that", "every", "one", "my", "her", "our",
];
const DET_PLURAL: &[&str] = &[
    "the", "some", "these", "those", "many", "two", "few", "their",
];

pub(super) fn document(rng: &mut impl Rng, target_bytes: usize) -> String {
    let mut out = String::with_capacity(target_bytes + 256);
    while out.len() < target_bytes {
        let sentences = rng.random_range(3..7);
        for i in 0..sentences {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&sentence(rng));
        }
        out.push('\n');
    }
    out
}

fn sentence(rng: &mut impl Rng) -> String {
    let mut s = if chance(rng, 10) {
        question(rng)
    } else {
        let mut s = clause(rng);
        if chance(rng, 25) {
            s.push_str(", ");
            s.push_str(pick(rng, CONJUNCTIONS));
            s.push(' ');
            s.push_str(&clause(rng));
        }
        s.push('.');
        s
    };
    capitalize(&mut s);
    s
}

/// "Does the old cat see a dog?" — the auxiliary agrees, the verb stays in its base form.
fn question(rng: &mut impl Rng) -> String {
    let (subject, plural) = noun_phrase(rng);
    let aux = if plural { "do" } else { "does" };
    let mut s = format!("{aux} {subject} {}", predicate(rng, false));
    s.push('?');
    s
}

fn clause(rng: &mut impl Rng) -> String {
    let (subject, plural) = noun_phrase(rng);
    if chance(rng, 20) {
        format!("{subject} {} {}", pick(rng, MODALS), predicate(rng, false))
    } else {
        format!("{subject} {}", predicate(rng, !plural))
    }
}

/// Verb phrase with an optional prepositional phrase; `third_singular` conjugates the verb.
fn predicate(rng: &mut impl Rng, third_singular: bool) -> String {
    let conjugate = |v: &str| {
        if third_singular {
            third_person(v)
        } else {
            v.to_string()
        }
    };
    let mut s = if chance(rng, 60) {
        let verb = conjugate(pick(rng, TRANSITIVE));
        format!("{verb} {}", noun_phrase(rng).0)
    } else {
        let mut s = conjugate(pick(rng, INTRANSITIVE));
        if chance(rng, 40) {
            s.push(' ');
            s.push_str(pick(rng, ADVERBS));
        }
        s
    };
    if chance(rng, 30) {
        s.push(' ');
        s.push_str(pick(rng, PREPOSITIONS));
        s.push(' ');
        s.push_str(&noun_phrase(rng).0);
    }
    s
}

/// Returns the phrase and whether it is plural.
fn noun_phrase(rng: &mut impl Rng) -> (String, bool) {
    if chance(rng, 12) {
        return (pick(rng, NAMES).to_string(), false);
    }
    let plural = chance(rng, 40);
    let det = pick(rng, if plural { DET_PLURAL } else { DET_SINGULAR });
    let noun = pick(rng, NOUNS);
    let noun = if plural {
        plural_of(noun)
    } else {
        noun.to_string()
    };
    let rest = if chance(rng, 35) {
        format!("{} {noun}", pick(rng, ADJECTIVES))
    } else {
        noun
    };
    let det = if det == "a" && starts_with_vowel(&rest) {
        "an"
    } else {
        det
    };
    (format!("{det} {rest}"), plural)
}

fn starts_with_vowel(word: &str) -> bool {
    word.starts_with(['a', 'e', 'i', 'o', 'u'])
}

fn ends_in_consonant_y(word: &str) -> bool {
    let b = word.as_bytes();
    b.len() >= 2 && b[b.len() - 1] == b'y' && !b"aeiou".contains(&b[b.len() - 2])
}

fn plural_of(noun: &str) -> String {
    match noun {
        "child" => return "children".into(),
        "man" => return "men".into(),
        "woman" => return "women".into(),
        "mouse" => return "mice".into(),
        "sheep" | "fish" => return noun.into(),
        "wolf" => return "wolves".into(),
        _ => {}
    }
    if ends_in_consonant_y(noun) {
        format!("{}ies", &noun[..noun.len() - 1])
    } else if noun.ends_with(['s', 'x']) || noun.ends_with("ch") || noun.ends_with("sh") {
        format!("{noun}es")
    } else {
        format!("{noun}s")
    }
}

fn third_person(verb: &str) -> String {
    if ends_in_consonant_y(verb) {
        format!("{}ies", &verb[..verb.len() - 1])
    } else if verb.ends_with(['s', 'x', 'o']) || verb.ends_with("ch") || verb.ends_with("sh") {
        format!("{verb}es")
    } else {
        format!("{verb}s")
    }
}

fn capitalize(s: &mut str) {
    if let Some(first) = s.get_mut(..1) {
        first.make_ascii_uppercase();
    }
}
