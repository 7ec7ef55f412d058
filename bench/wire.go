package bench

import (
	"encoding/binary"
	"errors"
)

// Command codes the load generator sends or recognises (see codec.Cmd).
const (
	cmdLogin      = 5
	cmdLoginResp  = 6
	cmdJoinGroup  = 7
	cmdJoinResp   = 8
	cmdChat       = 11
	cmdChatResp   = 12
	cmdHeartbeat  = 13
	statusOK      = 10000
	statusOffline = 10001
	statusLoginOK = 10007
)

// WebSocket opcodes used by the client side.
const (
	wsOpText  = 0x1
	wsOpClose = 0x8
	wsOpPing  = 0x9
	wsOpPong  = 0xA
)

// maxFrame bounds what a scanner accepts, so a corrupt length from a broken
// server cannot make a client buffer gigabytes.
const maxFrame = 4 << 20

var errFrame = errors.New("bad frame from server")

// AppendWSClientFrame appends one final WebSocket frame with the payload
// masked by key, as RFC 6455 requires of every client-to-server frame
// (codec.AppendWSFrame writes the unmasked server form only).
func AppendWSClientFrame(dst []byte, op byte, payload []byte, key [4]byte) []byte {
	dst = append(dst, 0x80|op&0x0f)
	switch n := len(payload); {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x80|126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	dst = append(dst, key[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	for i := range payload {
		dst[start+i] ^= key[i&3]
	}
	return dst
}

// scanTCP finds the first J-IM TCP frame in buf without copying it. n == 0
// with a nil error means the frame is not complete yet.
func scanTCP(buf []byte) (cmd int, body []byte, n int, err error) {
	if len(buf) < 2 {
		return 0, nil, 0, nil
	}
	if buf[0] != 0x01 {
		return 0, nil, 0, errFrame
	}
	hdr, p := 7, 2
	if buf[1]&0x20 != 0 {
		hdr, p = 11, 6
	}
	if len(buf) < hdr {
		return 0, nil, 0, nil
	}
	length := int32(binary.BigEndian.Uint32(buf[p+1:]))
	if length < 0 || length > maxFrame {
		return 0, nil, 0, errFrame
	}
	end := hdr + int(length)
	if len(buf) < end {
		return 0, nil, 0, nil
	}
	return int(int8(buf[p])), buf[hdr:end], end, nil
}

// scanWS finds the first WebSocket frame in buf without copying it. Server
// frames are unmasked, but a masked one is unmasked in place so that the
// scanner also serves tests that feed it client frames.
func scanWS(buf []byte) (op byte, payload []byte, n int, err error) {
	if len(buf) < 2 {
		return 0, nil, 0, nil
	}
	op = buf[0] & 0x0f
	masked := buf[1]&0x80 != 0
	hdr := 2
	length := uint64(buf[1] & 0x7f)
	switch length {
	case 126:
		hdr = 4
		if len(buf) < hdr {
			return 0, nil, 0, nil
		}
		length = uint64(binary.BigEndian.Uint16(buf[2:]))
	case 127:
		hdr = 10
		if len(buf) < hdr {
			return 0, nil, 0, nil
		}
		length = binary.BigEndian.Uint64(buf[2:])
	}
	if length > maxFrame {
		return 0, nil, 0, errFrame
	}
	var key [4]byte
	if masked {
		if len(buf) < hdr+4 {
			return 0, nil, 0, nil
		}
		copy(key[:], buf[hdr:])
		hdr += 4
	}
	end := hdr + int(length)
	if len(buf) < end {
		return 0, nil, 0, nil
	}
	payload = buf[hdr:end]
	if masked {
		for i := range payload {
			payload[i] ^= key[i&3]
		}
		// Unmasked now. Zeroing the key keeps a rescan from flipping the
		// payload back and leaves the frame's length as it was; clearing
		// the mask bit would make a rescan read the key as payload.
		clear(buf[hdr-4 : hdr])
	}
	return op, payload, end, nil
}

// jsonInt returns the integer following key (e.g. `"code":`) in a JSON body,
// accepting a quoted number too because J-IM-style peers sometimes send
// numbers as strings.
func jsonInt(b []byte, key string) (int64, bool) {
	i := indexOf(b, key)
	if i < 0 {
		return 0, false
	}
	return parseInt(b[i+len(key):])
}

// sendTime returns the send timestamp a benchmark message carries as
// "t=<unix nanoseconds>" in its content.
func sendTime(b []byte) (int64, bool) {
	i := indexOf(b, `"t=`)
	if i < 0 {
		return 0, false
	}
	return parseInt(b[i+3:])
}

func parseInt(b []byte) (int64, bool) {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '"') {
		i++
	}
	neg := false
	if i < len(b) && b[i] == '-' {
		neg = true
		i++
	}
	// The magnitude is kept unsigned and bounded by that of MinInt64, so a
	// number too long for int64 is refused rather than wrapped around.
	const limit = 1 << 63
	var u uint64
	start := i
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		d := uint64(b[i] - '0')
		if u > (limit-d)/10 {
			return 0, false
		}
		u = u*10 + d
	}
	if i == start || !neg && u == limit {
		return 0, false
	}
	if neg {
		return -int64(u), true // u == 1<<63 gives MinInt64, as it should
	}
	return int64(u), true
}

// indexOf is bytes.Index for a string needle without a conversion per call.
func indexOf(b []byte, s string) int {
	n := len(s)
	if n == 0 {
		return 0
	}
	c := s[0]
	for i := 0; i+n <= len(b); i++ {
		if b[i] == c && string(b[i:i+n]) == s {
			return i
		}
	}
	return -1
}
