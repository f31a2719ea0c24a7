use super::*;

async fn roundtrip(frames: &[(FrameKind, Bytes)], limit: usize) -> Vec<Result<Incoming, String>> {
    let (client, server) = tokio::io::duplex(1 << 22);
    let mut writer = FrameWriter::new(client, Role::Client, 7);
    for (kind, payload) in frames {
        writer.push(*kind, payload).await.unwrap();
    }
    writer.flush().await.unwrap();
    drop(writer);
    let mut reader = FrameReader::new(server, Role::Server, limit);
    let mut out = Vec::new();
    loop {
        match reader.next().await {
            Err(ReadError::Eof) => return out,
            Err(e) => {
                out.push(Err(e.to_string()));
                return out;
            }
            Ok(m) => out.push(Ok(m)),
        }
    }
}

#[tokio::test]
async fn frames_round_trip_with_masking() {
    let big = Bytes::from(vec![b'a'; 70_000]);
    let got = roundtrip(
        &[
            (FrameKind::Text, Bytes::from_static(b"hello")),
            (FrameKind::Ping, Bytes::new()),
            (FrameKind::Text, big.clone()),
            (
                FrameKind::Close,
                Bytes::from(close_payload(1009, "too big")),
            ),
        ],
        1 << 20,
    )
    .await;
    assert_eq!(got[0], Ok(Incoming::Text(Bytes::from_static(b"hello"))));
    assert_eq!(got[1], Ok(Incoming::Ping(Bytes::new())));
    assert_eq!(got[2], Ok(Incoming::Text(big)));
    assert_eq!(got[3], Ok(Incoming::Close(Some(1009))));
}

#[tokio::test]
async fn the_limit_is_inclusive() {
    let exact = Bytes::from(vec![b'x'; 1000]);
    let got = roundtrip(&[(FrameKind::Text, exact.clone())], 1000).await;
    assert_eq!(got, [Ok(Incoming::Text(exact))]);
    let over = Bytes::from(vec![b'x'; 1001]);
    let got = roundtrip(&[(FrameKind::Text, over)], 1000).await;
    assert_eq!(got, [Err("message over 1000 bytes".to_string())]);
}

fn masked_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![
        (if fin { 0x80 } else { 0 }) | opcode,
        0x80 | payload.len() as u8,
        1,
        2,
        3,
        4,
    ];
    let mut p = payload.to_vec();
    apply_mask(&mut p, [1, 2, 3, 4]);
    out.extend(p);
    out
}

#[tokio::test]
async fn fragments_are_reassembled_and_bounded() {
    let (mut client, server) = tokio::io::duplex(4096);
    let mut bytes = masked_frame(false, OP_TEXT, b"ab");
    bytes.extend(masked_frame(true, OP_PING, b""));
    bytes.extend(masked_frame(true, OP_CONTINUATION, b"cd"));
    bytes.extend(masked_frame(false, OP_TEXT, b"0123"));
    bytes.extend(masked_frame(true, OP_CONTINUATION, b"45"));
    client.write_all(&bytes).await.unwrap();
    let mut reader = FrameReader::new(server, Role::Server, 5);
    assert_eq!(reader.next().await.unwrap(), Incoming::Ping(Bytes::new()));
    assert_eq!(
        reader.next().await.unwrap(),
        Incoming::Text(Bytes::from_static(b"abcd"))
    );
    assert!(matches!(reader.next().await, Err(ReadError::TooBig(5))));
}

#[tokio::test]
async fn unmasked_client_frames_binary_and_bad_utf8_are_refused() {
    let (mut client, server) = tokio::io::duplex(64);
    client.write_all(&[0x81, 0x01, b'a']).await.unwrap();
    let mut reader = FrameReader::new(server, Role::Server, 100);
    assert!(matches!(reader.next().await, Err(ReadError::Protocol(_))));

    let (mut client, server) = tokio::io::duplex(64);
    client
        .write_all(&masked_frame(true, OP_BINARY, b"\x00\x01"))
        .await
        .unwrap();
    let mut reader = FrameReader::new(server, Role::Server, 100);
    assert_eq!(reader.next().await.unwrap(), Incoming::Binary);

    let bad_utf8 = || async {
        let (mut client, server) = tokio::io::duplex(64);
        client
            .write_all(&masked_frame(true, OP_TEXT, &[0xff, 0xfe]))
            .await
            .unwrap();
        FrameReader::new(server, Role::Server, 100)
    };
    assert!(matches!(
        bad_utf8().await.next().await,
        Err(ReadError::InvalidUtf8)
    ));
    // Read in place, as the session reads: refused the same way.
    assert!(matches!(
        bad_utf8().await.next_in_place().await,
        Err(ReadError::InvalidUtf8)
    ));
}

#[test]
fn masking_is_an_involution() {
    let mut data: Vec<u8> = (0..37).collect();
    apply_mask(&mut data, [9, 8, 7, 6]);
    apply_mask(&mut data, [9, 8, 7, 6]);
    assert_eq!(data, (0..37).collect::<Vec<u8>>());
}

/// A lone frame written from the stack arrives as pushed ones do, in both roles, at every
/// size around the stack's limit and past it.
#[tokio::test]
async fn lone_frames_arrive_whole_in_both_roles() {
    for (writer_role, reader_role) in [(Role::Client, Role::Server), (Role::Server, Role::Client)] {
        for len in [0, 1, 113, 114, 115, 125, 126, 511, 512, 513, 70_000] {
            let (ours, theirs) = tokio::io::duplex(1 << 20);
            let mut writer = FrameWriter::new(ours, writer_role, 7);
            let payload = Bytes::from(vec![b'p'; len]);
            writer.write_lone(FrameKind::Text, &payload).await.unwrap();
            writer.write_lone(FrameKind::Pong, b"ok").await.unwrap();
            let mut reader = FrameReader::new(theirs, reader_role, 1 << 20);
            assert_eq!(
                reader.next().await.unwrap(),
                Incoming::Text(payload),
                "{len}"
            );
            assert_eq!(reader.next().await.unwrap(), Incoming::Pong, "{len}");
        }
    }
}

/// A socket that takes only part of a lone frame, or none of it, gets the rest in order
/// once the other side reads: nothing is lost or doubled.
#[tokio::test]
async fn a_lone_frame_the_socket_cannot_take_whole_is_finished_later() {
    for room in [1, 5, 64] {
        let (ours, theirs) = tokio::io::duplex(room);
        let mut writer = FrameWriter::new(ours, Role::Server, 7);
        let first = Bytes::from(vec![b'a'; 300]);
        let second = Bytes::from(vec![b'b'; 200]);
        let writing = async {
            writer.write_lone(FrameKind::Text, &first).await.unwrap();
            writer.write_lone(FrameKind::Text, &second).await.unwrap();
        };
        let mut reader = FrameReader::new(theirs, Role::Client, 1 << 20);
        let reading = async {
            let a = reader.next().await.unwrap();
            let b = reader.next().await.unwrap();
            (a, b)
        };
        let both = async { tokio::join!(writing, reading) };
        let ((), (a, b)) = tokio::time::timeout(std::time::Duration::from_secs(10), both)
            .await
            .expect("both frames arrive");
        assert_eq!(a, Incoming::Text(first.clone()), "room {room}");
        assert_eq!(b, Incoming::Text(second.clone()), "room {room}");
    }
}

/// What `next_in_place` reads: the text of a small message lent in place, anything else
/// as `next` gives it; then the next frame, never the lent one again, whichever of the
/// reader's ways of reading comes next (a connection handed to the mesh goes on with
/// `next` on the boxed reader).
#[tokio::test]
async fn messages_read_in_place_are_those_next_reads() {
    let big = vec![b'b'; COPY_PAYLOAD_BYTES_MAX + 1];
    let mut bytes = masked_frame(true, OP_TEXT, br#"{"type":"ping"}"#);
    bytes.extend(masked_frame(true, OP_PING, b"hi"));
    bytes.extend(masked_frame(false, OP_TEXT, b"ab"));
    bytes.extend(masked_frame(true, OP_CONTINUATION, b"cd"));
    bytes.extend(masked_frame(true, OP_TEXT, "é".as_bytes()));
    bytes.extend(masked_frame(true, OP_TEXT, b"last"));
    let (mut client, server) = tokio::io::duplex(1 << 16);
    client.write_all(&bytes).await.unwrap();
    // A frame over 125 bytes needs the longer header `masked_frame` does not write.
    let mut long = vec![0x81, 0x80 | 126];
    long.extend((big.len() as u16).to_be_bytes());
    long.extend([1, 2, 3, 4]);
    let mut masked = big.clone();
    apply_mask(&mut masked, [1, 2, 3, 4]);
    long.extend(masked);
    client.write_all(&long).await.unwrap();
    let mut reader = FrameReader::new(server, Role::Server, 1 << 16);
    assert_eq!(
        reader.next_in_place().await.unwrap(),
        InPlace::Text(r#"{"type":"ping"}"#)
    );
    assert_eq!(
        reader.next_in_place().await.unwrap(),
        InPlace::Frame(Incoming::Ping(Bytes::from_static(b"hi")))
    );
    assert_eq!(
        reader.next_in_place().await.unwrap(),
        InPlace::Frame(Incoming::Text(Bytes::from_static(b"abcd")))
    );
    assert_eq!(reader.next_in_place().await.unwrap(), InPlace::Text("é"));
    let mut reader = reader.boxed();
    assert_eq!(
        reader.next().await.unwrap(),
        Incoming::Text(Bytes::from_static(b"last"))
    );
    assert_eq!(
        reader.next().await.unwrap(),
        Incoming::Text(Bytes::from(big))
    );
}
