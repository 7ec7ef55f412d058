package codec

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"strconv"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// DefaultWSMaxMessage is J-IM's WebSocket message limit (WsPacket
// MAX_BODY_LENGTH), used when WSDecoder.MaxMessage is zero.
const DefaultWSMaxMessage = 512 << 10

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// WSAcceptKey returns the Sec-WebSocket-Accept value for a client key:
// base64(SHA-1(key + GUID)), RFC 6455 §4.2.2.
func WSAcceptKey(key string) string {
	var out [28]byte
	return string(appendAcceptKey(out[:0], key))
}

func appendAcceptKey(dst []byte, key string) []byte {
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte(wsGUID))
	var sum [sha1.Size]byte
	var enc [28]byte
	base64.StdEncoding.Encode(enc[:], h.Sum(sum[:0]))
	return append(dst, enc[:]...)
}

// ValidWSKey reports whether key is a valid Sec-WebSocket-Key: the base64 of
// 16 bytes (RFC 6455 §4.1). The caller answers 400 otherwise.
func ValidWSKey(key string) bool {
	if len(key) != 24 {
		return false
	}
	var out [18]byte
	n, err := base64.StdEncoding.Decode(out[:], []byte(key))
	return err == nil && n == 16
}

// AppendWSUpgrade appends the 101 Switching Protocols response accepting key.
// No subprotocol or extension is negotiated, as in J-IM.
func AppendWSUpgrade(dst []byte, key string) []byte {
	dst = append(dst, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	dst = appendAcceptKey(dst, key)
	return append(dst, "\r\n\r\n"...)
}

// WSOp is a WebSocket frame opcode (RFC 6455 §5.2).
type WSOp uint8

// The RFC 6455 opcodes.
const (
	WSContinuation = WSOp(ws.OpContinuation)
	WSText         = WSOp(ws.OpText)
	WSBinary       = WSOp(ws.OpBinary)
	WSClose        = WSOp(ws.OpClose)
	WSPing         = WSOp(ws.OpPing)
	WSPong         = WSOp(ws.OpPong)
)

// Close codes the decoder reports (RFC 6455 §7.4.1).
const (
	wsCloseProtocol   = uint16(ws.StatusProtocolError)
	wsCloseInvalidUTF = uint16(ws.StatusInvalidFramePayloadData)
	wsCloseTooBig     = uint16(ws.StatusMessageTooBig)
	wsCloseNoStatus   = uint16(ws.StatusNoStatusRcvd)
	wsMaxControl      = 125
)

// WSMessage is one complete WebSocket message or control frame.
type WSMessage struct {
	// Op is WSText or WSBinary for a complete (reassembled) data message, or
	// WSPing, WSPong or WSClose for a control frame.
	Op WSOp
	// Payload is an owned, unmasked copy.
	Payload []byte
	// CloseCode is, for WSClose, the status code the peer sent (1005 when
	// the payload was empty).
	CloseCode uint16
	// CloseReason is, for WSClose, the reason text the peer sent.
	CloseReason string
}

// WSError is a WebSocket protocol violation. Code is the close code to send
// back: 1002 protocol error, 1007 invalid UTF-8, 1009 message too big.
type WSError struct {
	Code   uint16
	Reason string
}

// Error implements error.
func (e *WSError) Error() string {
	return "codec: websocket " + strconv.Itoa(int(e.Code)) + ": " + e.Reason
}

func wsErr(code uint16, reason string) *WSError { return &WSError{Code: code, Reason: reason} }

// WSDecoder reassembles a connection's incoming WebSocket messages. Its zero
// value is ready to use. It holds no buffer while idle: the fragment buffer
// exists only while a fragmented message is in flight, because this struct
// lives as long as every idle connection.
type WSDecoder struct {
	// MaxMessage bounds a whole (reassembled) message; 0 means
	// DefaultWSMaxMessage.
	MaxMessage int
	// RequireMask refuses unmasked client frames. J-IM accepts them, so the
	// default (false) does too.
	RequireMask bool

	frag   []byte // the data message being reassembled
	fragOp WSOp   // its opcode
	inFrag bool   // a fragmented message is in flight (frag may still be empty)
}

// Buffered is the memory held by a fragmented message still being
// reassembled: what a connection costs beyond its socket buffers while
// the message arrives.
func (d *WSDecoder) Buffered() int { return cap(d.frag) }

// WSFrameLen is the length of the frame at the start of buf, header and
// payload, as soon as its header is whole (ok): how many bytes Decode waits
// for before it can take the frame. It checks nothing else; a frame Decode
// would refuse may still have a length.
func WSFrameLen(buf []byte) (n uint64, ok bool) {
	if len(buf) < 2 {
		return 0, false
	}
	hdr, length := uint64(2), uint64(buf[1]&0x7f)
	switch length {
	case 126:
		if len(buf) < 4 {
			return 0, false
		}
		hdr, length = 4, uint64(binary.BigEndian.Uint16(buf[2:]))
	case 127:
		if len(buf) < 10 {
			return 0, false
		}
		hdr, length = 10, binary.BigEndian.Uint64(buf[2:])
		if length>>63 != 0 {
			return 0, false
		}
	}
	if buf[1]&0x80 != 0 {
		hdr += 4
	}
	return hdr + length, true
}

// Decode consumes at most one frame from the start of buf. n == 0 && err ==
// nil means more bytes are needed. ok reports whether msg holds a message: a
// final data frame completing a message, or a control frame, which may arrive
// between the fragments of a data message and is returned at once. Sizes are
// checked from the header, before the payload arrives. After an error the
// connection must be closed with err's code.
func (d *WSDecoder) Decode(buf []byte) (msg WSMessage, ok bool, n int, err error) {
	if len(buf) < 2 {
		return msg, false, 0, nil
	}
	b0, b1 := buf[0], buf[1]
	fin := b0&0x80 != 0
	if b0&0x70 != 0 {
		return msg, false, 0, wsErr(wsCloseProtocol, "reserved bits set")
	}
	op := WSOp(b0 & 0x0f)
	masked := b1&0x80 != 0
	len7 := int(b1 & 0x7f)
	switch op {
	case WSContinuation:
		if !d.inFrag {
			return msg, false, 0, wsErr(wsCloseProtocol, "continuation without a message")
		}
	case WSText, WSBinary:
		if d.inFrag {
			return msg, false, 0, wsErr(wsCloseProtocol, "new message inside a fragmented one")
		}
	case WSClose, WSPing, WSPong:
		if !fin {
			return msg, false, 0, wsErr(wsCloseProtocol, "fragmented control frame")
		}
		if len7 > wsMaxControl {
			return msg, false, 0, wsErr(wsCloseProtocol, "control frame too long")
		}
	default:
		return msg, false, 0, wsErr(wsCloseProtocol, "reserved opcode")
	}
	if !masked && d.RequireMask {
		return msg, false, 0, wsErr(wsCloseProtocol, "unmasked client frame")
	}

	hdr := 2
	var length uint64
	switch len7 {
	case 126:
		hdr = 4
		if len(buf) < hdr {
			return msg, false, 0, nil
		}
		length = uint64(binary.BigEndian.Uint16(buf[2:]))
	case 127:
		hdr = 10
		if len(buf) < hdr {
			return msg, false, 0, nil
		}
		length = binary.BigEndian.Uint64(buf[2:])
		if length>>63 != 0 {
			return msg, false, 0, wsErr(wsCloseProtocol, "invalid 64-bit length")
		}
	default:
		length = uint64(len7)
	}
	if op < WSClose {
		max := d.MaxMessage
		if max <= 0 {
			max = DefaultWSMaxMessage
		}
		if length > uint64(max) || uint64(len(d.frag))+length > uint64(max) {
			return msg, false, 0, wsErr(wsCloseTooBig, "message too big")
		}
	}
	var mask [4]byte
	if masked {
		if len(buf) < hdr+4 {
			return msg, false, 0, nil
		}
		copy(mask[:], buf[hdr:])
		hdr += 4
	}
	end := hdr + int(length) // length <= MaxMessage or 125: no overflow
	if len(buf) < end {
		return msg, false, 0, nil
	}
	raw := buf[hdr:end]

	switch op {
	case WSContinuation:
		start := len(d.frag)
		d.frag = append(d.frag, raw...)
		if masked {
			ws.Cipher(d.frag[start:], mask, 0)
		}
		if !fin {
			return msg, false, end, nil
		}
		msg.Op, msg.Payload = d.fragOp, d.frag
		d.frag, d.fragOp, d.inFrag = nil, 0, false
	case WSText, WSBinary:
		p := ownedPayload(raw, masked, mask)
		if !fin {
			d.frag, d.fragOp, d.inFrag = p, op, true
			return msg, false, end, nil
		}
		msg.Op, msg.Payload = op, p
	default:
		msg.Op, msg.Payload = op, ownedPayload(raw, masked, mask)
		if op == WSClose {
			if err := parseClose(&msg); err != nil {
				return WSMessage{}, false, 0, err
			}
		}
		return msg, true, end, nil
	}
	if msg.Op == WSText && !utf8.Valid(msg.Payload) {
		return WSMessage{}, false, 0, wsErr(wsCloseInvalidUTF, "invalid UTF-8 text")
	}
	return msg, true, end, nil
}

func ownedPayload(raw []byte, masked bool, mask [4]byte) []byte {
	if len(raw) == 0 {
		return nil
	}
	p := make([]byte, len(raw))
	copy(p, raw)
	if masked {
		ws.Cipher(p, mask, 0)
	}
	return p
}

// parseClose fills the close code and reason, enforcing RFC 6455 §5.5.1 and
// §7.4.
func parseClose(m *WSMessage) *WSError {
	switch len(m.Payload) {
	case 0:
		m.CloseCode = wsCloseNoStatus
		return nil
	case 1:
		return wsErr(wsCloseProtocol, "close payload of one byte")
	}
	code := binary.BigEndian.Uint16(m.Payload)
	if !validCloseCode(code) {
		return wsErr(wsCloseProtocol, "invalid close code")
	}
	reason := m.Payload[2:]
	if !utf8.Valid(reason) {
		return wsErr(wsCloseInvalidUTF, "invalid UTF-8 close reason")
	}
	m.CloseCode, m.CloseReason = code, string(reason)
	return nil
}

// validCloseCode reports whether a peer may send code: the codes RFC 6455
// defines for the wire, the IANA-registered 1012-1014, and 3000-4999.
func validCloseCode(code uint16) bool {
	s := ws.StatusCode(code)
	switch {
	case s.IsProtocolDefined():
		return !s.IsProtocolReserved()
	case code >= 1012 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// AppendWSFrame appends one unmasked server frame with FIN set.
func AppendWSFrame(dst []byte, op WSOp, payload []byte) []byte {
	dst = append(dst, 0x80|byte(op&0x0f))
	switch n := len(payload); {
	case n < 126:
		dst = append(dst, byte(n))
	case n <= 0xffff:
		dst = append(dst, 126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, 127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, payload...)
}

// AppendWSClose appends a close frame carrying code and reason. The reason is
// cut (on a UTF-8 boundary) to fit the 125-byte control payload. A code of 0
// or 1005, which must not appear on the wire, gives an empty close payload.
func AppendWSClose(dst []byte, code uint16, reason string) []byte {
	if code == 0 || code == wsCloseNoStatus {
		return append(dst, 0x80|byte(WSClose), 0)
	}
	if len(reason) > wsMaxControl-2 {
		cut := wsMaxControl - 2
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut]
	}
	dst = append(dst, 0x80|byte(WSClose), byte(2+len(reason)))
	dst = binary.BigEndian.AppendUint16(dst, code)
	return append(dst, reason...)
}
