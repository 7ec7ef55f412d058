package storage

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

// Key layout of the Badger store (docs/storage.md has the full table).
// Every variable-length component of a key is written as a 2-byte big-endian
// length followed by its bytes, so a prefix built from one component can
// never match a longer id that merely starts with the same bytes.
//
//	v                              format version (uint32 BE)
//	i                              8 random bytes, the store's message id prefix
//	c                              last global message number (uint64 BE)
//	m/<conv>/<seq:8 BE>            message
//	s/<conv>                       last seq of conv (uint64 BE)
//	o/<user>/<gseq:8 BE>           offline reference (user's queue, oldest first)
//	d/<from>/<clientId>            dedup ack, with a TTL (spilled from D/, or written by older versions)
//	D/<gseq:8 BE>                  the dedup records of one batch, with a TTL (badger_dedupidx.go)
//	S                              gseq key of the last D/ entry spilled to d/ (uint64 BE)
//	g/<gid>/<uid>                  membership, by group
//	u/<uid>/<gid>                  membership, by user
var (
	keyVersion = []byte("v")
	keyIDPref  = []byte("i")
	keyGSeq    = []byte("c")
)

const (
	pfxMsg    = "m/"
	pfxSeq    = "s/"
	pfxOff    = "o/"
	pfxDedup  = "d/"
	pfxGroup  = "g/"
	pfxByUser = "u/"
)

// maxKeyPart is the longest id a key component may hold. Badger refuses a
// key over 65,000 bytes, and a refused key fails its whole commit, which
// stops the store; the longest keys hold two parts (a dedup key: sender and
// client id; a membership: group and user), so two parts at this bound and
// the fixed bytes around them still fit.
const maxKeyPart = 32000

var errKeyTooLong = errors.New("storage: id longer than 32000 bytes")

func appendPart(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func partsOK(ss ...string) error {
	for _, s := range ss {
		if len(s) > maxKeyPart {
			return errKeyTooLong
		}
	}
	return nil
}

// prefix1 is pfx + part(a).
func prefix1(pfx, a string) []byte {
	b := make([]byte, 0, len(pfx)+2+len(a)+8)
	return appendPart(append(b, pfx...), a)
}

func msgKey(conv string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(prefix1(pfxMsg, conv), seq)
}

func seqKey(conv string) []byte { return prefix1(pfxSeq, conv) }

func offKey(user string, gseq uint64) []byte {
	return binary.BigEndian.AppendUint64(prefix1(pfxOff, user), gseq)
}

func dedupKey(from, clientID string) []byte { return append(prefix1(pfxDedup, from), clientID...) }
func groupKey(gid, uid string) []byte       { return append(prefix1(pfxGroup, gid), uid...) }
func byUserKey(uid, gid string) []byte      { return append(prefix1(pfxByUser, uid), gid...) }

// keyTail returns the part of key after a one-component prefix.
func keyTail(key []byte, pfxLen int) ([]byte, bool) {
	if len(key) < pfxLen+2 {
		return nil, false
	}
	n := int(binary.BigEndian.Uint16(key[pfxLen:]))
	if len(key) < pfxLen+2+n {
		return nil, false
	}
	return key[pfxLen+2+n:], true
}

// keyPart returns the first component after a prefix of pfxLen bytes.
func keyPart(key []byte, pfxLen int) (string, bool) {
	if len(key) < pfxLen+2 {
		return "", false
	}
	n := int(binary.BigEndian.Uint16(key[pfxLen:]))
	if len(key) < pfxLen+2+n {
		return "", false
	}
	return string(key[pfxLen+2 : pfxLen+2+n]), true
}

// seqOf returns the trailing 8-byte number of a message or offline key.
func seqOf(key []byte) uint64 {
	if len(key) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(key[len(key)-8:])
}

// Message ids of the Badger store are the store's 8-byte random prefix
// followed by the global message number, as 32 hex digits: unique within the
// store and across stores, and an offline entry can be found from the id.
func makeID(prefix [8]byte, gseq uint64) string {
	var b [16]byte
	copy(b[:8], prefix[:])
	binary.BigEndian.PutUint64(b[8:], gseq)
	return hex.EncodeToString(b[:])
}

func gseqOfID(prefix [8]byte, id string) (uint64, bool) {
	var b [16]byte
	if len(id) != 32 {
		return 0, false
	}
	if _, err := hex.Decode(b[:], []byte(id)); err != nil || [8]byte(b[:8]) != prefix {
		return 0, false
	}
	return binary.BigEndian.Uint64(b[8:]), true
}

// Value encoding. Strings are uvarint length + bytes; integers are varints.
// A message value starts with a format byte so fields can be added later.
const msgFormat = 1

// msgFormatNum is msgFormat with the id stored as the message's global
// number (format version 2 of the data directory).
const msgFormatNum = 2

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// encodeMsg encodes everything but Conv and Seq, which are in the key, with
// the id as text (msgFormat): for ids the Badger store did not make itself
// (the JetStream store's).
func encodeMsg(b []byte, m *Message) []byte {
	b = append(b, msgFormat)
	b = appendStr(b, m.ID)
	return encodeMsgRest(b, m)
}

// encodeMsgNum is encodeMsg for a message whose id is makeID(the store's
// prefix, gseq): the id is stored as that number (msgFormatNum), about 30
// bytes fewer per message than its 32 hex digits, so Badger's memtable
// fills and flushes less often.
func encodeMsgNum(b []byte, m *Message, gseq uint64) []byte {
	b = append(b, msgFormatNum)
	b = binary.AppendUvarint(b, gseq)
	return encodeMsgRest(b, m)
}

func encodeMsgRest(b []byte, m *Message) []byte {
	b = binary.AppendUvarint(b, uint64(m.ChatType))
	b = binary.AppendVarint(b, int64(m.MsgType))
	b = binary.AppendVarint(b, m.CreateTime)
	b = appendStr(b, m.From)
	b = appendStr(b, m.To)
	b = appendStr(b, m.GroupID)
	b = appendStr(b, m.Content)
	b = appendStr(b, m.ClientID)
	if m.Extras == nil {
		b = binary.AppendUvarint(b, 0)
	} else {
		b = binary.AppendUvarint(b, uint64(len(m.Extras))+1)
		b = append(b, m.Extras...)
	}
	return b
}

var errCorrupt = errors.New("storage: corrupt value")

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(n uint64) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errCorrupt
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) str() string { return string(r.bytes(r.uvarint())) }

// decodeMsg decodes a value of encodeMsg.
func decodeMsg(conv string, seq uint64, v []byte) (*Message, error) {
	return decodeMsgIn(conv, seq, v, nil)
}

// decodeMsgIn decodes a value of encodeMsg or, given the prefix of the
// store that wrote it, of encodeMsgNum.
func decodeMsgIn(conv string, seq uint64, v []byte, prefix *[8]byte) (*Message, error) {
	if len(v) == 0 || v[0] != msgFormat && (v[0] != msgFormatNum || prefix == nil) {
		return nil, fmt.Errorf("%w: message format", errCorrupt)
	}
	r := reader{b: v[1:]}
	m := &Message{Conv: conv, Seq: seq}
	if v[0] == msgFormat {
		m.ID = r.str()
	} else if g := r.uvarint(); r.err == nil {
		m.ID = makeID(*prefix, g)
	}
	m.ChatType = int(r.uvarint())
	m.MsgType = int(r.varint())
	m.CreateTime = r.varint()
	m.From = r.str()
	m.To = r.str()
	m.GroupID = r.str()
	m.Content = r.str()
	m.ClientID = r.str()
	if n := r.uvarint(); n > 0 {
		m.Extras = append([]byte(nil), r.bytes(n-1)...)
	}
	if r.err != nil {
		return nil, r.err
	}
	return m, nil
}

// msgCreateTime reads only a stored message's createTime, which sits
// before its strings: a time-filtered history read tests every message of
// the window's range and decodes only those it keeps. A value
// decodeMsgIn would refuse is an error here too, or is left for it.
func msgCreateTime(v []byte) (int64, error) {
	if len(v) == 0 || v[0] != msgFormat && v[0] != msgFormatNum {
		return 0, fmt.Errorf("%w: message format", errCorrupt)
	}
	r := reader{b: v[1:]}
	if v[0] == msgFormat {
		r.bytes(r.uvarint())
	} else {
		r.uvarint()
	}
	r.uvarint()
	r.varint()
	t := r.varint()
	return t, r.err
}

// An offline entry references the stored message and carries what the
// filters need, so a filtered fetch reads only the messages it returns.
func encodeOffRef(b []byte, m *Message) []byte {
	b = append(b, byte(m.ChatType))
	b = appendStr(b, m.From)
	b = appendStr(b, m.GroupID)
	b = appendStr(b, m.Conv)
	return binary.BigEndian.AppendUint64(b, m.Seq)
}

type offRef struct {
	chatType      int
	from, groupID string
	conv          string
	seq           uint64
}

func decodeOffRef(v []byte) (offRef, error) {
	if len(v) < 1 {
		return offRef{}, errCorrupt
	}
	r := reader{b: v[1:]}
	o := offRef{chatType: int(v[0])}
	o.from = r.str()
	o.groupID = r.str()
	o.conv = r.str()
	s := r.bytes(8)
	if r.err != nil {
		return offRef{}, r.err
	}
	o.seq = binary.BigEndian.Uint64(s)
	return o, nil
}

// A dedup value is the original ack: seq (8 BE) + id.
func encodeAck(a Ack) []byte {
	return append(binary.BigEndian.AppendUint64(nil, a.Seq), a.ID...)
}

func decodeAck(v []byte) (Ack, error) {
	if len(v) < 8 {
		return Ack{}, errCorrupt
	}
	return Ack{Seq: binary.BigEndian.Uint64(v), ID: string(v[8:])}, nil
}

func binaryBE(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
