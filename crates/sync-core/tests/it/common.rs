//! Shared test helpers: a deterministic RNG and generators of random JSON values and
//! of random patches that apply to a given document.

use serde_json::{Map, Value, json};
use sync_core::patch::{Patch, PatchOp, apply};
use sync_core::pointer::JsonPointer;

/// Deterministic random numbers (SplitMix64).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const KEYS: [&str; 5] = ["a", "b", "c", "d", "e"];

pub(crate) fn random_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 1 { 4 } else { 7 }) {
        0 => json!(rng.below(100)),
        1 => json!(format!("s{}", rng.below(1000))),
        2 => json!(rng.chance(50)),
        3 => Value::Null,
        4 => {
            let mut map = Map::new();
            for _ in 0..rng.below(3) {
                map.insert(KEYS[rng.below(KEYS.len())].to_owned(), random_value(rng, depth + 1));
            }
            Value::Object(map)
        }
        _ => Value::Array((0..rng.below(3)).map(|_| random_value(rng, depth + 1)).collect()),
    }
}

/// Picks a random existing container under `root` (which must exist).
fn random_container(rng: &mut Rng, doc: &Value, root: &JsonPointer) -> JsonPointer {
    let mut path = root.clone();
    loop {
        let Some(node) = path.get(doc) else { return root.clone() };
        let children: Vec<JsonPointer> = match node {
            Value::Object(map) => {
                map.iter().filter(|(_, v)| v.is_object() || v.is_array()).map(|(k, _)| path.child(k.as_str())).collect()
            }
            Value::Array(items) => items
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_object() || v.is_array())
                .map(|(i, _)| path.child(i.to_string()))
                .collect(),
            _ => return root.clone(),
        };
        if children.is_empty() || rng.chance(40) {
            return path;
        }
        path = children[rng.below(children.len())].clone();
    }
}

/// One random op that applies to `doc`, confined to the subtree at `root`.
pub(crate) fn random_op(rng: &mut Rng, doc: &Value, root: &JsonPointer) -> Option<PatchOp> {
    let at = random_container(rng, doc, root);
    match at.get(doc)? {
        Value::Object(map) => {
            let keys: Vec<&String> = map.keys().collect();
            let choice = rng.below(10);
            if keys.is_empty() || choice < 4 {
                let key = KEYS[rng.below(KEYS.len())];
                return Some(PatchOp::Add { path: at.child(key), value: random_value(rng, 0) });
            }
            let key = keys[rng.below(keys.len())].as_str();
            let path = at.child(key);
            Some(match choice {
                4..=6 => PatchOp::Replace { path, value: random_value(rng, 0) },
                7 => PatchOp::Remove { path },
                8 => {
                    let other = KEYS[rng.below(KEYS.len())];
                    if other == key {
                        return None;
                    }
                    PatchOp::Move { from: path, path: at.child(other) }
                }
                _ => PatchOp::Test { path: path.clone(), value: path.get(doc)?.clone() },
            })
        }
        Value::Array(items) => {
            let len = items.len();
            let choice = rng.below(10);
            if len == 0 || choice < 4 {
                let index = if rng.chance(30) { "-".to_owned() } else { rng.below(len + 1).to_string() };
                return Some(PatchOp::Add { path: at.child(index), value: random_value(rng, 0) });
            }
            let i = rng.below(len);
            Some(match choice {
                4..=5 => PatchOp::Replace { path: at.child(i.to_string()), value: random_value(rng, 0) },
                6..=7 => PatchOp::Remove { path: at.child(i.to_string()) },
                8 => PatchOp::Move { from: at.child(i.to_string()), path: at.child(rng.below(len).to_string()) },
                _ => PatchOp::Copy { from: at.child(i.to_string()), path: at.child(rng.below(len + 1).to_string()) },
            })
        }
        _ => None,
    }
}

pub(crate) fn random_patch(rng: &mut Rng, view: &Value, root: &JsonPointer) -> Patch {
    let mut scratch = view.clone();
    let mut patch = Vec::new();
    for _ in 0..1 + rng.below(3) {
        if let Some(op) = random_op(rng, &scratch, root)
            && apply(&mut scratch, std::slice::from_ref(&op)).is_ok()
        {
            patch.push(op);
        }
    }
    patch
}
