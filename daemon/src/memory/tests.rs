//! Tests of the memory stores: values sealed per agent, a row or a file moved to another
//! agent refused with a clear error, quotas, search with any characters, purge.

use super::*;
use crate::store::Store;

fn setup() -> (tempfile::TempDir, Memory, AgentKey, AgentKey) {
    crate::keyring::join_for_this_thread().expect("a session keyring for this test thread");
    let store = Store::open_in_memory().expect("store");
    let vault = Arc::new(Vault::open(
        store,
        format!("test{:08x}", rand::random::<u32>()),
    ));
    vault.init().expect("vault init");
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        max_value_bytes: 1024,
        max_keys: 5,
        max_bytes: 3000,
    };
    let mem = Memory::new(dir.path(), vault, limits);
    let k = |n: &str| AgentKey {
        tenant: "t".into(),
        name: n.into(),
    };
    (dir, mem, k("a"), k("b"))
}

#[test]
fn values_are_sealed_on_disk_and_only_the_owner_reads_them() {
    let (_dir, mem, a, b) = setup();
    let sa = mem.store(&a).expect("a's store");
    let l = mem.limits;
    sa.put(
        "note",
        Kind::Text,
        b"canary-memory-7f3a the quick brown fox",
        &l,
        5,
    )
    .expect("put");
    sa.put("../b/note", Kind::Json, br#"{"x":1}"#, &l, 6)
        .expect("a key like any other");
    let (kind, v, at) = sa.get("note").expect("get").expect("present");
    assert_eq!(
        (kind, v.as_slice(), at),
        (
            Kind::Text,
            &b"canary-memory-7f3a the quick brown fox"[..],
            5
        )
    );
    // Nothing readable in the file.
    let raw = std::fs::read(mem.path(&a)).expect("file");
    let wal = std::fs::read(format!("{}-wal", mem.path(&a).display())).unwrap_or_default();
    for bytes in [&raw, &wal] {
        assert!(
            !bytes.windows(18).any(|w| w == b"canary-memory-7f3a"),
            "a value in clear on disk"
        );
    }
    // b's store is its own: the crafted key named nothing of b's.
    let sb = mem.store(&b).expect("b's store");
    assert!(sb.get("note").expect("get").is_none());
    assert_eq!(sb.list("", "", 10).expect("list"), vec![]);

    // A row copied from a's file into b's does not open, and says why.
    drop((sa, sb));
    mem.lock().clear();
    let copy = rusqlite::Connection::open(mem.path(&b)).expect("b's file");
    copy.execute(
        "ATTACH DATABASE ?1 AS other",
        [mem.path(&a).to_str().expect("utf-8")],
    )
    .expect("attach");
    copy.execute(
        "INSERT INTO mem SELECT * FROM other.mem WHERE key = 'note'",
        [],
    )
    .expect("copy the row");
    drop(copy);
    let e = match mem.store(&b).expect("b's store").get("note") {
        Err(e) => e.to_string(),
        Ok(v) => panic!("a copied row opened: {:?}", v.map(|x| x.0)),
    };
    assert!(e.contains("not written by this agent"), "{e}");

    // a's whole file put in b's place does not open either.
    mem.lock().clear();
    std::fs::copy(mem.path(&a), mem.path(&b)).expect("copy the file");
    let _ = std::fs::remove_file(format!("{}-wal", mem.path(&b).display()));
    let e = match mem.store(&b) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a copied file opened"),
    };
    assert!(e.contains("made for t/a"), "{e}");
}

#[test]
fn quotas_sizes_lists_and_search() {
    let (_dir, mem, a, _) = setup();
    let s = mem.store(&a).expect("store");
    let l = mem.limits;
    // At the size limit, and one byte over.
    s.put("big", Kind::Bytes, &[7u8; 1024], &l, 1)
        .expect("exactly the limit");
    let e = s
        .put("bigger", Kind::Bytes, &[7u8; 1025], &l, 1)
        .expect_err("over");
    assert!(matches!(e, MemError::TooLarge(_)), "{e}");
    // Bytes quota: 1024 + 1024 + 1024 > 3000.
    s.put("big2", Kind::Bytes, &[1u8; 1024], &l, 2)
        .expect("2048 bytes");
    let e = s
        .put("big3", Kind::Bytes, &[1u8; 1024], &l, 3)
        .expect_err("over the quota");
    assert!(
        matches!(e, MemError::Quota(_)) && e.to_string().contains("memory_max_bytes"),
        "{e}"
    );
    // Replacing a value counts its new size only.
    s.put("big2", Kind::Bytes, &[1u8; 900], &l, 4)
        .expect("replace");
    assert_eq!(s.usage().bytes, 1924);
    // Keys quota: 5.
    s.put("k1", Kind::Text, b"alpha beta", &l, 5).expect("k1");
    s.put(
        "k2",
        Kind::Text,
        b"beta gamma, C++ & (parens) \"quotes\"",
        &l,
        6,
    )
    .expect("k2");
    s.put(
        "k3",
        Kind::Json,
        r#"{"city":"Zürich","beta":true}"#.as_bytes(),
        &l,
        7,
    )
    .expect("k3");
    let e = s
        .put("k4", Kind::Text, b"x", &l, 8)
        .expect_err("a sixth key");
    assert!(e.to_string().contains("memory_max_keys"), "{e}");
    // Lists by prefix, paged by the last key.
    let page = s.list("k", "", 2).expect("list");
    assert_eq!(
        page.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        ["k1", "k2"]
    );
    let next = s.list("k", "k2", 2).expect("list");
    assert_eq!(
        next.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        ["k3"]
    );
    // Search: every word, any characters in the query, ranked.
    let words = search_words("beta").expect("words");
    let hits = s.search(&words, 10).expect("search");
    assert_eq!(hits.len(), 3, "{hits:?}");
    let hits = s
        .search(&search_words("C++ (parens) \"quotes* ^:-").expect("w"), 10)
        .expect("search");
    assert_eq!(
        hits.iter().map(|h| h.0.as_str()).collect::<Vec<_>>(),
        ["k2"]
    );
    let hits = s
        .search(&search_words("zürich").expect("w"), 10)
        .expect("search");
    assert_eq!(
        hits.iter().map(|h| h.0.as_str()).collect::<Vec<_>>(),
        ["k3"]
    );
    assert!(search_words("*** ()").is_err());
    // Bytes are not searched.
    assert!(s
        .search(&search_words("7").expect("w"), 10)
        .expect("search")
        .is_empty());
    // Deleting frees the room; the index forgets the words; reopening recounts.
    assert!(s.delete("k2", 9).expect("delete"));
    assert!(!s.delete("k2", 9).expect("delete again"));
    assert!(s
        .search(&search_words("gamma").expect("w"), 10)
        .expect("s")
        .is_empty());
    let before = s.usage();
    drop(s);
    mem.lock().clear();
    let s = mem.store(&a).expect("reopened");
    assert_eq!(s.usage(), before);
    assert_eq!(
        s.search(&search_words("alpha").expect("w"), 10)
            .expect("s")
            .len(),
        1
    );
}

#[test]
fn keys_are_checked_and_the_purge_removes_the_file() {
    assert!(check_key("").is_err());
    assert!(check_key(&"x".repeat(MAX_KEY_BYTES + 1)).is_err());
    assert!(check_key("a\u{0}b")
        .unwrap_err()
        .to_string()
        .contains("U+0000"));
    assert!(check_key("../../etc/passwd").is_ok(), "a key, not a path");
    let (_dir, mem, a, b) = setup();
    assert_eq!(mem.usage(&b).expect("usage"), Usage::default());
    assert!(!mem.path(&b).exists(), "stats do not make a file");
    mem.store(&a)
        .expect("store")
        .put("k", Kind::Text, b"v", &mem.limits, 1)
        .expect("put");
    assert!(mem.path(&a).exists());
    assert!(mem.purge(&a).expect("purge").is_some());
    assert!(!mem.path(&a).exists(), "the file is removed");
    assert_eq!(mem.purge(&a).expect("purge again"), None);
}

#[test]
fn an_export_goes_in_pages_each_key_once_in_order() {
    let (_dir, mem, a, _) = setup();
    let s = mem.store(&a).expect("store");
    let l = mem.limits;
    for (i, size) in [100usize, 100, 900, 100, 100].into_iter().enumerate() {
        s.put(&format!("k{i}"), Kind::Bytes, &vec![b'x'; size], &l, 1)
            .expect("put");
    }
    // Pages of at most 250 bytes of values; one value larger than that is a page alone.
    let mut pages = Vec::new();
    let mut after = String::new();
    loop {
        let (keys, next) = s.export_keys(&after, 250).expect("page");
        pages.push(keys);
        match next {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(
        pages,
        vec![
            vec!["k0".to_string(), "k1".into()],
            vec!["k2".into()],
            vec!["k3".into(), "k4".into()],
        ]
    );
    // An empty memory: one empty page, no next.
    let (_dir2, mem2, _, b) = setup();
    assert_eq!(
        mem2.store(&b).unwrap().export_keys("", 250).unwrap(),
        (vec![], None)
    );
}

#[test]
fn idle_stores_are_closed_past_the_limit_and_reopen_whole() {
    let (_dir, mem, a, b) = setup();
    let mem = mem.with_max_open(2);
    let l = mem.limits;
    let c = AgentKey {
        tenant: "t".into(),
        name: "c".into(),
    };
    mem.store(&a)
        .unwrap()
        .put("k", Kind::Text, b"of a", &l, 1)
        .unwrap();
    let held_b = mem.store(&b).unwrap();
    held_b.put("k", Kind::Text, b"of b", &l, 1).unwrap();
    // A third store: a, idle, is closed; b, held, stays.
    mem.store(&c)
        .unwrap()
        .put("k", Kind::Text, b"of c", &l, 1)
        .unwrap();
    assert_eq!(mem.open_stores(), 2);
    // Reopened when needed, whole: its value and its search index.
    let sa = mem.store(&a).unwrap();
    assert_eq!(&sa.get("k").unwrap().unwrap().1[..], b"of a");
    assert_eq!(sa.usage().keys, 1);
    assert_eq!(&held_b.get("k").unwrap().unwrap().1[..], b"of b");
    assert!(mem.open_stores() <= 2);
}
