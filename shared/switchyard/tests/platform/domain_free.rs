//! The platform knows no domain: no word of the reference domain (orders, inventory, email,
//! audit) appears in its sources or its manifest. A domain's names live in its contract crate.

const DOMAIN_WORDS: &[&str] = &[
    "order",
    "orders",
    "Order",
    "Orders",
    "ORDERS",
    "inventory",
    "Inventory",
    "INVENTORY",
    "email",
    "emails",
    "Email",
    "EMAIL",
    "audit",
    "Audit",
    "AUDIT",
    "sku",
    "skus",
    "SKU",
    "stock",
    "Stock",
];

fn words_in(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().flat_map(|(n, line)| {
        line.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).map(move |w| (n + 1, w))
    })
}

#[test]
fn the_platform_sources_hold_no_domain_word() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("Cargo.toml")];
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("a source dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() { dirs.push(path) } else { files.push(path) }
        }
    }
    let mut found = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read source");
        for (line, word) in words_in(&text) {
            if DOMAIN_WORDS.contains(&word) {
                found.push(format!("{}:{line}: {word}", path.display()));
            }
        }
    }
    assert!(files.len() > 10, "the sources were read: {files:?}");
    assert!(found.is_empty(), "domain words in the platform:\n{}", found.join("\n"));
}

#[test]
fn the_check_finds_a_domain_word() {
    let hits: Vec<_> = words_in("fn reserve(order_id: u64) {}\n// the ORDERS stream")
        .filter(|(_, w)| DOMAIN_WORDS.contains(w))
        .collect();
    assert_eq!(hits, vec![(1, "order"), (2, "ORDERS")], "identifiers split at underscores");
}
