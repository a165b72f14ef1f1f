//! The keys checked here are the bytes nft 1.0.6 itself sends for the same elements
//! (`nft --debug=netlink`), so elements written by either are read and deleted by both.

use super::*;

const ADDR4_INTERVAL: SetKind = SetKind::Addr {
    v6: false,
    interval: true,
};

fn one(kind: SetKind, e: &str) -> Vec<KernelElement> {
    encode(kind, e).unwrap()
}

fn key(key: &[u8]) -> KernelElement {
    KernelElement::key(key.to_vec())
}

fn end(key: &[u8]) -> KernelElement {
    KernelElement {
        key: key.to_vec(),
        key_end: None,
        interval_end: true,
    }
}

#[test]
fn plain_addresses_are_their_bytes() {
    let v4 = SetKind::Addr {
        v6: false,
        interval: false,
    };
    assert_eq!(one(v4, "10.0.9.1"), [key(&[10, 0, 9, 1])]);
    let v6 = SetKind::Addr {
        v6: true,
        interval: false,
    };
    let mut fd00_1 = [0u8; 16];
    fd00_1[0] = 0xfd;
    fd00_1[15] = 1;
    assert_eq!(one(v6, "fd00::1"), [key(&fd00_1)]);
    // The wrong family is an error, not a truncated key.
    assert!(encode(v4, "fd00::1").is_err());
    assert!(encode(v6, "10.0.0.1").is_err());
}

#[test]
fn interval_ranges_end_with_the_next_address_flagged() {
    assert_eq!(
        one(ADDR4_INTERVAL, "10.0.9.1"),
        [key(&[10, 0, 9, 1]), end(&[10, 0, 9, 2])]
    );
    assert_eq!(
        one(ADDR4_INTERVAL, "10.1.0.0-10.1.255.255"),
        [key(&[10, 1, 0, 0]), end(&[10, 2, 0, 0])]
    );
    // A range to the last address has no end element.
    assert_eq!(
        one(ADDR4_INTERVAL, "192.168.0.0-255.255.255.255"),
        [key(&[192, 168, 0, 0])]
    );
    let v6 = SetKind::Addr {
        v6: true,
        interval: true,
    };
    let mut lo = [0u8; 16];
    lo[..4].copy_from_slice(&[0xfd, 0, 0, 1]);
    let mut after = lo;
    after[13] = 1;
    assert_eq!(one(v6, "fd00:1::-fd00:1::ffff"), [key(&lo), end(&after)]);
    assert!(encode(ADDR4_INTERVAL, "10.0.0.1-").is_err());
}

#[test]
fn port_ranges_are_padded_fields_with_an_end_key() {
    let tcp80 = [6, 0, 0, 0, 0, 0x50, 0, 0];
    assert_eq!(
        one(SetKind::Ports, "tcp . 80"),
        [KernelElement {
            key: tcp80.to_vec(),
            key_end: Some(tcp80.to_vec()),
            interval_end: false,
        }]
    );
    assert_eq!(
        one(SetKind::Ports, "udp . 1000-2000"),
        [KernelElement {
            key: vec![17, 0, 0, 0, 0x03, 0xe8, 0, 0],
            key_end: Some(vec![17, 0, 0, 0, 0x07, 0xd0, 0, 0]),
            interval_end: false,
        }]
    );
    assert_eq!(one(SetKind::Ports, "sctp . 9")[0].key[0], 132);
    assert!(encode(SetKind::Ports, "icmp . 9").is_err());
    assert!(encode(SetKind::Ports, "tcp . 70000").is_err());
}

#[test]
fn named_ports_concatenate_address_protocol_and_port() {
    assert_eq!(
        one(SetKind::Named { v6: false }, "10.0.0.1 . tcp . 8080"),
        [key(&[10, 0, 0, 1, 6, 0, 0, 0, 0x1f, 0x90, 0, 0])]
    );
    let six = one(SetKind::Named { v6: true }, "fd00::1 . udp . 53");
    assert_eq!(six[0].key.len(), 24);
    assert_eq!(&six[0].key[16..], [17, 0, 0, 0, 0, 53, 0, 0]);
    assert!(encode(SetKind::Named { v6: false }, "10.0.0.1 . tcp").is_err());
    assert!(encode(SetKind::Named { v6: false }, "10.0.0.1 . tcp . 1 . 2").is_err());
}

#[test]
fn a_batch_is_begin_messages_end_and_answers_are_read_back() {
    let changes = [
        SetChange {
            op: Op::Delete,
            set: "s".into(),
            kind: ADDR4_INTERVAL,
            elements: vec!["10.0.0.1".into()],
        },
        SetChange {
            op: Op::Add,
            set: "s".into(),
            kind: ADDR4_INTERVAL,
            elements: (0..300)
                .map(|i| format!("10.1.{}.{}", i / 200, i % 200))
                .collect(),
        },
    ];
    let (bytes, messages) = batch(&changes, 7).unwrap();
    // One delete message, the 600 kernel elements of the adds in three.
    assert_eq!(messages, 4);
    let mut kinds = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
        let seq = u32::from_ne_bytes(rest[8..12].try_into().unwrap());
        kinds.push((ty, seq));
        rest = &rest[len..];
    }
    let elem = |m| (NFNL_SUBSYS_NFTABLES << 8) | m;
    assert_eq!(
        kinds,
        [
            (NFNL_MSG_BATCH_BEGIN, 7),
            (elem(NFT_MSG_DELSETELEM), 8),
            (elem(NFT_MSG_NEWSETELEM), 9),
            (elem(NFT_MSG_NEWSETELEM), 10),
            (elem(NFT_MSG_NEWSETELEM), 11),
            (NFNL_MSG_BATCH_END, 12),
        ]
    );
    // A bad element fails the whole batch before anything is sent.
    let bad = [SetChange {
        op: Op::Add,
        set: "s".into(),
        kind: SetKind::Ports,
        elements: vec!["10.0.0.1".into()],
    }];
    assert!(batch(&bad, 0).is_err());

    // Two acknowledgements in one datagram: success, then ENOENT.
    let mut answer = Vec::new();
    for (seq, errno) in [(8u32, 0i32), (9, -libc::ENOENT)] {
        answer.extend(36u32.to_ne_bytes());
        answer.extend(NLMSG_ERROR.to_ne_bytes());
        answer.extend(0u16.to_ne_bytes());
        answer.extend(seq.to_ne_bytes());
        answer.extend(0u32.to_ne_bytes());
        answer.extend(errno.to_ne_bytes());
        answer.extend([0u8; 16]);
    }
    assert_eq!(answers(&answer), [(8, 0), (9, libc::ENOENT)]);
    assert_eq!(answers(&answer[..10]), []);
}
