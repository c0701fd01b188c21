//! A file's block map as `map` prints it and `verify` compares it: the
//! FIEMAP extent list, in a JSON form that is stable across versions.

use serde::{Deserialize, Serialize};

use dax_seal_sys::seal::Extent;

/// The version of the JSON form below; `verify` refuses others.
pub const MAP_VERSION: u32 = 1;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Map {
    pub version: u32,
    /// The path the map was taken from, for the reader; not compared.
    pub file: String,
    pub size: u64,
    pub extents: Vec<MapExtent>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MapExtent {
    /// Byte offset in the file.
    pub logical: u64,
    /// Byte address on the device.
    pub physical: u64,
    /// Bytes.
    pub length: u64,
    /// FIEMAP_EXTENT_* names, lower case, without the prefix.
    pub flags: Vec<String>,
}

const FLAG_NAMES: &[(u32, &str)] = &[
    (0x0001, "last"),
    (0x0002, "unknown"),
    (0x0004, "delalloc"),
    (0x0008, "encoded"),
    (0x0080, "data_encrypted"),
    (0x0100, "not_aligned"),
    (0x0200, "data_inline"),
    (0x0400, "data_tail"),
    (0x0800, "unwritten"),
    (0x1000, "merged"),
    (0x2000, "shared"),
];

/// FIEMAP flag bits as names; bits without a name come out in hex.
pub fn flag_names(flags: u32) -> Vec<String> {
    let mut names: Vec<String> =
        FLAG_NAMES.iter().filter(|(bit, _)| flags & bit != 0).map(|(_, name)| name.to_string()).collect();
    let known = FLAG_NAMES.iter().fold(0, |acc, (bit, _)| acc | bit);
    if flags & !known != 0 {
        names.push(format!("{:#x}", flags & !known));
    }
    names
}

impl Map {
    pub fn new(file: &str, size: u64, extents: &[Extent]) -> Map {
        Map {
            version: MAP_VERSION,
            file: file.to_string(),
            size,
            extents: extents
                .iter()
                .map(|e| MapExtent {
                    logical: e.logical,
                    physical: e.physical,
                    length: e.length,
                    flags: flag_names(e.flags),
                })
                .collect(),
        }
    }

    /// Reads a saved `map --json`, refusing anything else with the reason.
    pub fn from_json(text: &str) -> Result<Map, String> {
        let map: Map =
            serde_json::from_str(text).map_err(|e| format!("not a `daxctl-immutable map --json` file: {e}"))?;
        if map.version != MAP_VERSION {
            return Err(format!("map version {} is not the {MAP_VERSION} this tool reads", map.version));
        }
        Ok(map)
    }

    pub fn to_json(&self) -> String {
        // A struct of strings and numbers always serialises.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The human table: one extent a line, then a summary.
    pub fn table(&self) -> String {
        let mut out = format!("{:>4}  {:>14}  {:>16}  {:>14}  flags\n", "#", "logical", "physical", "length");
        for (i, e) in self.extents.iter().enumerate() {
            out += &format!("{i:>4}  {:>14}  {:>16}  {:>14}  {}\n", e.logical, e.physical, e.length, e.flags.join(","));
        }
        let mapped: u64 = self.extents.iter().map(|e| e.length).sum();
        out += &format!(
            "{} extent{}, {} mapped, file size {}\n",
            self.extents.len(),
            if self.extents.len() == 1 { "" } else { "s" },
            crate::size::human(mapped),
            crate::size::human(self.size)
        );
        out
    }

    /// What changed from `saved` to `self`, one line each: the size, then
    /// extents only in the saved map (`-`) and only in this one (`+`).
    /// Empty when the maps are the same.
    pub fn differences(&self, saved: &Map) -> Vec<String> {
        let mut out = Vec::new();
        if self.size != saved.size {
            out.push(format!("size: {} saved, {} now", saved.size, self.size));
        }
        for e in saved.extents.iter().filter(|e| !self.extents.contains(e)) {
            out.push(format!("- {}", extent_text(e)));
        }
        for e in self.extents.iter().filter(|e| !saved.extents.contains(e)) {
            out.push(format!("+ {}", extent_text(e)));
        }
        out
    }
}

fn extent_text(e: &MapExtent) -> String {
    let flags = if e.flags.is_empty() { String::new() } else { format!(" [{}]", e.flags.join(",")) };
    format!("logical {} physical {} length {}{flags}", e.logical, e.physical, e.length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extent(logical: u64, physical: u64, length: u64, flags: u32) -> Extent {
        Extent { logical, physical, length, flags }
    }

    fn sample() -> Map {
        Map::new("/mnt/pmem0/f", 3 << 20, &[extent(0, 1 << 30, 2 << 20, 0), extent(2 << 20, 3 << 30, 1 << 20, 0x2001)])
    }

    #[test]
    fn json_round_trips() {
        let map = sample();
        assert_eq!(Map::from_json(&map.to_json()), Ok(map));
    }

    #[test]
    fn flags_have_names_and_unknown_bits_stay_visible() {
        assert_eq!(flag_names(0x2001), ["last", "shared"]);
        assert_eq!(flag_names(0x0800), ["unwritten"]);
        assert_eq!(flag_names(0x4000_0800), ["unwritten", "0x40000000"]);
        assert!(flag_names(0).is_empty());
    }

    #[test]
    fn malformed_maps_are_refused_with_the_reason() {
        for bad in ["", "{", "[]", r#"{"version":1}"#, r#"{"version":1,"file":"f","size":-1,"extents":[]}"#] {
            let e = Map::from_json(bad).expect_err(bad);
            assert!(e.contains("map --json"), "{bad}: {e}");
        }
        let mut other = serde_json::to_value(sample()).unwrap();
        other["version"] = 2.into();
        assert!(Map::from_json(&other.to_string()).unwrap_err().contains("version 2"));
        let mut extra = serde_json::to_value(sample()).unwrap();
        extra["colour"] = "blue".into();
        assert!(Map::from_json(&extra.to_string()).is_err());
    }

    #[test]
    fn same_maps_have_no_differences_whatever_the_name() {
        let mut renamed = sample();
        renamed.file = "/elsewhere".into();
        assert!(sample().differences(&renamed).is_empty());
    }

    #[test]
    fn differences_show_size_and_moved_extents() {
        let saved = sample();
        let now =
            Map::new("/mnt/pmem0/f", 4 << 20, &[extent(0, 1 << 30, 2 << 20, 0), extent(2 << 20, 5 << 30, 1 << 20, 1)]);
        assert_eq!(
            now.differences(&saved),
            [
                "size: 3145728 saved, 4194304 now",
                "- logical 2097152 physical 3221225472 length 1048576 [last,shared]",
                "+ logical 2097152 physical 5368709120 length 1048576 [last]",
            ]
        );
    }

    #[test]
    fn table_has_a_line_per_extent_and_a_summary() {
        let t = sample().table();
        let lines: Vec<_> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].contains("logical") && lines[0].contains("flags"));
        assert!(lines[2].ends_with("last,shared"), "{t}");
        assert_eq!(lines[3], "2 extents, 3 MiB mapped, file size 3 MiB");
    }
}

/// Property tests (`cargo xtask fuzz` raises the case count through
/// `DAX_SEAL_FUZZ_CASES`).
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn extents() -> impl Strategy<Value = Vec<Extent>> {
        prop::collection::vec(
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>())
                .prop_map(|(logical, physical, length, flags)| Extent { logical, physical, length, flags }),
            0..8,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: dax_seal_protocol::fuzz_cases(), failure_persistence: None, ..ProptestConfig::default() })]

        /// A saved map reads back as it was, and compares equal to itself.
        #[test]
        fn saved_maps_read_back(file in any::<String>(), size in any::<u64>(), ext in extents()) {
            let map = Map::new(&file, size, &ext);
            let back = Map::from_json(&map.to_json()).unwrap();
            prop_assert_eq!(&back, &map);
            prop_assert!(back.differences(&map).is_empty());
        }

        /// Anything else, JSON or not, is refused with a reason.
        #[test]
        fn any_text_is_read_or_refused(text in prop_oneof![
            any::<String>(),
            "\\{\"version\": ?-?[0-9]{1,3}, \"file\": \"[a-z]{0,5}\", \"size\": [0-9]{1,22}, \"extents\": \\[\\]\\}",
        ]) {
            if let Err(e) = Map::from_json(&text) {
                prop_assert!(!e.is_empty());
            }
        }

        /// One extent changed shows as one removed and one added.
        #[test]
        fn a_moved_extent_is_one_minus_and_one_plus(ext in extents().prop_filter("one at least", |e| !e.is_empty()), delta in 1u64..) {
            let saved = Map::new("f", 1, &ext);
            let mut moved = ext.clone();
            moved[0].physical = moved[0].physical.wrapping_add(delta);
            let now = Map::new("f", 1, &moved);
            let d = now.differences(&saved);
            if !ext[1..].contains(&moved[0]) && !moved[1..].contains(&ext[0]) {
                prop_assert!(d.iter().any(|l| l.starts_with("- ")) && d.iter().any(|l| l.starts_with("+ ")), "{d:?}");
            }
        }
    }
}
