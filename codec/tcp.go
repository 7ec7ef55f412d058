package codec

import (
	"encoding/binary"
	"errors"
)

// TCPVersion is the first byte of every J-IM TCP frame.
const TCPVersion byte = 0x01

// Mask (flag) byte values. J-IM defines encrypt, compress and 4-byte-length
// bits too, but never acts on them, so only the seq bit is read.
const (
	// MaskHasSeq marks a frame that carries a 4-byte sync sequence; it is the
	// only mask bit the decoder reads.
	MaskHasSeq byte = 0x20
	// MaskOut is the mask J-IM's encoder writes on a frame without a seq.
	MaskOut byte = 0x51
	// MaskOutSeq is the mask J-IM's encoder writes on a frame with a seq.
	MaskOutSeq byte = 0xF1
)

// DefaultMaxBody is the TCP body limit used when the caller passes none. J-IM
// has no limit at all; an unbounded length from the network is not acceptable.
const DefaultMaxBody = 1 << 20

const (
	tcpHeaderLen    = 7
	tcpHeaderSeqLen = 11
)

// TCP framing errors. Each is fatal for the connection, as in J-IM.
var (
	// ErrVersion reports a first byte other than TCPVersion.
	ErrVersion = errors.New("codec: TCP protocol version mismatch")
	// ErrBodyTooLarge reports a body length over the configured maximum.
	ErrBodyTooLarge = errors.New("codec: TCP body too large")
	// ErrBadLength reports a negative body length.
	ErrBadLength = errors.New("codec: TCP negative body length")
)

// TCPFrame is one decoded J-IM TCP frame.
type TCPFrame struct {
	Cmd    Cmd
	Seq    int32
	HasSeq bool
	Body   []byte
}

// DecodeTCP decodes one frame at the start of buf. n == 0 && err == nil means
// buf holds only part of a frame and more bytes are needed. Body is a fresh
// copy owned by the caller (nil for length 0) and is the only allocation.
// maxBody <= 0 means DefaultMaxBody. The length is checked as soon as the
// header is complete, so an oversized frame is refused before its body is
// buffered; with ErrBodyTooLarge, f holds the frame's Cmd, Seq and HasSeq
// (no body), so that the refusal can be answered.
func DecodeTCP(buf []byte, maxBody int) (f TCPFrame, n int, err error) {
	return decodeTCP(buf, maxBody, false, 0)
}

// DecodeTCPDropBody is DecodeTCP, except that a frame whose command is drop
// comes back without its body (nil), so it allocates nothing. For a command
// whose body the caller never reads (a heartbeat, an idle connection's most
// frequent frame), that keeps a connection that only heartbeats from making
// garbage.
func DecodeTCPDropBody(buf []byte, maxBody int, drop Cmd) (f TCPFrame, n int, err error) {
	return decodeTCP(buf, maxBody, true, drop)
}

func decodeTCP(buf []byte, maxBody int, dropping bool, drop Cmd) (f TCPFrame, n int, err error) {
	hdr, p, length, whole, err := tcpHead(buf)
	if err != nil || !whole {
		return f, 0, err
	}
	hasSeq := buf[1]&MaskHasSeq != 0
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	if int64(length) > int64(maxBody) {
		// The header is whole, so the caller can answer the frame's
		// command and seq with an error before it closes.
		return tcpHeader(buf, p, hasSeq), 0, ErrBodyTooLarge
	}
	end := hdr + int(length)
	if len(buf) < end {
		return f, 0, nil
	}
	f = tcpHeader(buf, p, hasSeq)
	if length > 0 && !(dropping && f.Cmd == drop) {
		f.Body = make([]byte, length)
		copy(f.Body, buf[hdr:end])
	}
	return f, end, nil
}

// PeekTCPHeader returns the command and seq of the frame at the start of
// buf once its header is whole, before its body has arrived, so that a frame
// refused mid-way can be answered under its own command. ok is false while
// the header is incomplete, or for a header DecodeTCP refuses outright (a
// wrong version, a negative length).
func PeekTCPHeader(buf []byte) (f TCPFrame, ok bool) {
	f, _, ok = peekTCP(buf)
	return f, ok
}

// TCPFrameLen is the length of the frame at the start of buf, header and
// body, as soon as its header is whole (ok): how many bytes DecodeTCP waits
// for. A negative length is not ok.
func TCPFrameLen(buf []byte) (n int64, ok bool) {
	_, n, ok = peekTCP(buf)
	return n, ok
}

func peekTCP(buf []byte) (f TCPFrame, n int64, ok bool) {
	hdr, p, length, whole, err := tcpHead(buf)
	if err != nil || !whole {
		return f, 0, false
	}
	return tcpHeader(buf, p, buf[1]&MaskHasSeq != 0), int64(hdr) + int64(length), true
}

// tcpHead reads the header at the start of buf: its length, where the
// command byte is, and the body length. whole is false while the header is
// incomplete; err is set for a wrong version or a negative length, which
// no more bytes can mend.
func tcpHead(buf []byte) (hdr, p int, length int32, whole bool, err error) {
	if len(buf) == 0 {
		return 0, 0, 0, false, nil
	}
	if buf[0] != TCPVersion {
		return 0, 0, 0, false, ErrVersion
	}
	if len(buf) < 2 {
		return 0, 0, 0, false, nil
	}
	hdr, p = tcpHeaderLen, 2
	if buf[1]&MaskHasSeq != 0 {
		hdr, p = tcpHeaderSeqLen, 6
	}
	if len(buf) < hdr {
		return 0, 0, 0, false, nil
	}
	length = int32(binary.BigEndian.Uint32(buf[p+1:]))
	if length < 0 {
		return 0, 0, 0, false, ErrBadLength
	}
	return hdr, p, length, true, nil
}

// tcpHeader returns the command and seq of a whole header whose command
// byte is at p.
func tcpHeader(buf []byte, p int, hasSeq bool) (f TCPFrame) {
	if hasSeq {
		f.Seq = int32(binary.BigEndian.Uint32(buf[2:]))
		f.HasSeq = true
	}
	f.Cmd = Cmd(int8(buf[p]))
	return f
}

// AppendTCP appends one frame as J-IM's encoder writes it: 01 51 cmd len body,
// or 01 F1 seq cmd len body when hasSeq, all big-endian.
func AppendTCP(dst []byte, cmd Cmd, seq int32, hasSeq bool, body []byte) []byte {
	return append(appendTCPHeader(dst, cmd, seq, hasSeq, len(body)), body...)
}

// appendTCPHeader appends the header of a frame whose body is n bytes long.
func appendTCPHeader(dst []byte, cmd Cmd, seq int32, hasSeq bool, n int) []byte {
	if hasSeq {
		dst = append(dst, TCPVersion, MaskOutSeq)
		dst = binary.BigEndian.AppendUint32(dst, uint32(seq))
	} else {
		dst = append(dst, TCPVersion, MaskOut)
	}
	dst = append(dst, byte(cmd))
	return binary.BigEndian.AppendUint32(dst, uint32(n))
}
