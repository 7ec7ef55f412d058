package codec

import "sync/atomic"

// Outbound is one encoded reply that may go to many connections (a group
// chat, a broadcast): the JSON is encoded once and framed lazily, once per
// protocol that actually needs it, whatever the number of receivers.
type Outbound struct {
	Cmd    Cmd
	Seq    int32
	HasSeq bool
	JSON   []byte

	tcp atomic.Pointer[[]byte]
	ws  atomic.Pointer[[]byte]
	// tcpPre is the TCP frame NewOutboundRoom built around the JSON, or nil.
	tcpPre []byte
}

// NewOutbound returns an Outbound for cmd carrying json. Set Seq and HasSeq
// before the first call to TCP, if at all.
func NewOutbound(cmd Cmd, json []byte) *Outbound {
	return &Outbound{Cmd: cmd, JSON: json}
}

// TCPRoom is how many spare bytes NewOutboundRoom needs in front of the
// JSON: the longest TCP header.
const TCPRoom = tcpHeaderSeqLen

// NewOutboundRoom returns an Outbound for cmd whose JSON is buf[TCPRoom:],
// the first TCPRoom bytes of buf being spare. The TCP frame is the header,
// written into that room, and the JSON after it: one buffer serves both,
// where NewOutbound's first TCP call copies the JSON into a new frame. A
// delivery to one connection is encoded once and then never copied; most
// connections speak TCP. seq and hasSeq set Seq and HasSeq, which must not
// change afterwards.
func NewOutboundRoom(cmd Cmd, seq int32, hasSeq bool, buf []byte) *Outbound {
	json := buf[TCPRoom:]
	hdr := tcpHeaderLen
	if hasSeq {
		hdr = tcpHeaderSeqLen
	}
	frame := buf[TCPRoom-hdr:]
	appendTCPHeader(frame[:0], cmd, seq, hasSeq, len(json))
	return &Outbound{Cmd: cmd, Seq: seq, HasSeq: hasSeq, JSON: json, tcpPre: frame}
}

// TCP returns the J-IM TCP frame (see AppendTCP), built on first use. It is
// safe for concurrent use; callers must not modify the result.
func (o *Outbound) TCP() []byte {
	if o.tcpPre != nil {
		return o.tcpPre
	}
	if p := o.tcp.Load(); p != nil {
		return *p
	}
	b := AppendTCP(make([]byte, 0, tcpHeaderSeqLen+len(o.JSON)), o.Cmd, o.Seq, o.HasSeq, o.JSON)
	return publish(&o.tcp, b)
}

// WS returns one unmasked TEXT frame carrying the JSON, built on first use.
// It is safe for concurrent use; callers must not modify the result.
func (o *Outbound) WS() []byte {
	if p := o.ws.Load(); p != nil {
		return *p
	}
	b := AppendWSFrame(make([]byte, 0, 10+len(o.JSON)), WSText, o.JSON)
	return publish(&o.ws, b)
}

// publish stores b unless a concurrent caller got there first, in which case
// that caller's identical frame wins, so every receiver shares one slice.
func publish(slot *atomic.Pointer[[]byte], b []byte) []byte {
	if slot.CompareAndSwap(nil, &b) {
		return b
	}
	return *slot.Load()
}

// PeekCmd reads the "cmd" field of a JSON request body, given as a number or a
// numeric string, as J-IM routes WebSocket frames. ok is false for invalid
// JSON, a body that is not an object, or a missing, null or out-of-range cmd.
func PeekCmd(body []byte) (cmd Cmd, ok bool) {
	if len(body) == 0 {
		return 0, false
	}
	var h struct {
		Cmd *FlexInt `json:"cmd"`
	}
	if err := Unmarshal(body, &h); err != nil || h.Cmd == nil {
		return 0, false
	}
	if c := int64(*h.Cmd); c >= -128 && c <= 127 {
		return Cmd(c), true
	}
	return 0, false
}
