package cluster

import (
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"jim/codec"
	"jim/dispatch"
)

// frameVersion is the first byte of every routed frame, so the format can
// change without a node misreading a newer one.
const frameVersion = 1

var errFrame = errors.New("cluster: malformed frame")

// appendFrame encodes m: version, kind, command, target and except (each a
// uvarint length and bytes), then the JSON to the end.
func appendFrame(dst []byte, m *dispatch.ClusterMsg) []byte {
	dst = append(dst, frameVersion, byte(m.Kind), byte(int8(m.Cmd)))
	dst = binary.AppendUvarint(dst, uint64(len(m.Target)))
	dst = append(dst, m.Target...)
	dst = binary.AppendUvarint(dst, uint64(len(m.Except)))
	dst = append(dst, m.Except...)
	return append(dst, m.JSON...)
}

// parseFrame decodes a frame; JSON aliases b.
func parseFrame(b []byte) (dispatch.ClusterMsg, error) {
	var m dispatch.ClusterMsg
	if len(b) < 3 || b[0] != frameVersion {
		return m, errFrame
	}
	m.Kind, m.Cmd = dispatch.ClusterKind(b[1]), codec.Cmd(int8(b[2]))
	b = b[3:]
	str := func() (string, bool) {
		l, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < l {
			return "", false
		}
		s := string(b[k : k+int(l)])
		b = b[k+int(l):]
		return s, true
	}
	var ok bool
	if m.Target, ok = str(); !ok {
		return m, errFrame
	}
	if m.Except, ok = str(); !ok {
		return m, errFrame
	}
	m.JSON = b
	return m, nil
}

// Publish sends m to the other nodes that need it, without waiting: a user
// message to each live node holding the user (usually one), a kick to every
// live node, a group
// message once on the group subject, which every other node receives and
// fans out locally. Nothing is sent when no other node needs it.
func (n *Node) Publish(m dispatch.ClusterMsg) {
	var nodes [4]string
	switch m.Kind {
	case dispatch.ClusterUser, dispatch.ClusterKick:
		var targets []string
		if m.Kind == dispatch.ClusterKick {
			// Kicks are rare and must not miss a connection whose login
			// has not reached this node's presence view yet: every live
			// node gets them, and those without the user ignore them.
			targets = n.view.liveOthers(nodes[:0])
		} else {
			targets = n.view.remoteNodes(m.Target, nodes[:0])
		}
		if len(targets) == 0 {
			return
		}
		frame := appendFrame(nil, &m)
		for _, node := range targets {
			if m.Kind == dispatch.ClusterUser && m.Cmd == codec.CmdChatReq {
				n.sendChat(nodeSubject+node, frame, m)
				continue
			}
			n.send(nodeSubject+node, frame, m.Kind)
		}
	case dispatch.ClusterGroup:
		if !n.view.othersLive() {
			return
		}
		n.send(groupSubject+n.id, appendFrame(nil, &m), m.Kind)
	}
}

func (n *Node) send(subj string, frame []byte, k dispatch.ClusterKind) {
	// nats.Conn.Publish copies into the connection's buffer and returns;
	// the flusher goroutine writes it.
	if err := n.nc.Publish(subj, frame); err != nil {
		n.m.pubErr.Inc()
		n.log.Debug("cluster: publish", "subject", subj, "err", err)
		return
	}
	n.m.published(k).Inc()
}

// missWindow is how long a routed chat is remembered in case NATS reports
// that no node took it. The report comes back within a round trip.
const missWindow = 2 * time.Second

type missed struct {
	m  dispatch.ClusterMsg
	at time.Time
}

func (n *Node) missInbox() string { return "_jim.miss." + n.id + "." }

// sendChat publishes a private chat with a reply subject. Nobody answers a
// delivered chat; but when the target node's subscription is gone (the node
// closed its connection or died with it) the server at once answers "no
// responders", and the chat goes to the user's offline queue through
// ClusterUndelivered instead of being lost between presence and reality.
func (n *Node) sendChat(subj string, frame []byte, m dispatch.ClusterMsg) {
	n.missMu.Lock()
	n.missSeq++
	seq := n.missSeq
	n.miss[seq] = missed{m: m, at: time.Now()}
	n.missMu.Unlock()
	msg := &nats.Msg{Subject: subj, Reply: n.missInbox() + strconv.FormatUint(seq, 10), Data: frame}
	if err := n.nc.PublishMsg(msg); err != nil {
		n.m.pubErr.Inc()
		n.log.Debug("cluster: publish", "subject", subj, "err", err)
		n.missMu.Lock()
		delete(n.miss, seq)
		n.missMu.Unlock()
		if h := n.handler(); h != nil {
			h.ClusterUndelivered(m)
		}
		return
	}
	n.m.published(m.Kind).Inc()
}

// noResponders handles a reply on the miss inbox.
func (n *Node) noResponders(msg *nats.Msg) {
	if msg.Header.Get("Status") != "503" {
		return
	}
	seq, err := strconv.ParseUint(strings.TrimPrefix(msg.Subject, n.missInbox()), 10, 64)
	if err != nil {
		return
	}
	n.missMu.Lock()
	e, ok := n.miss[seq]
	delete(n.miss, seq)
	n.missMu.Unlock()
	if h := n.handler(); ok && h != nil {
		n.m.undelivered.Inc()
		h.ClusterUndelivered(e.m)
	}
}

func (n *Node) expireMissed(now time.Time) {
	n.missMu.Lock()
	for seq, e := range n.miss {
		if now.Sub(e.at) > missWindow {
			delete(n.miss, seq)
		}
	}
	n.missMu.Unlock()
}

// receive runs on a subscription's goroutine: it decodes and hands off to
// the dispatcher, which queues the work.
func (n *Node) receive(msg *nats.Msg) {
	if strings.HasPrefix(msg.Subject, "_jim.miss.") {
		n.noResponders(msg)
		return
	}
	if origin, ok := strings.CutPrefix(msg.Subject, groupSubject); ok && origin == n.id {
		return // our own group message, already delivered here
	}
	m, err := parseFrame(msg.Data)
	if err != nil {
		n.m.badFrames.Inc()
		return
	}
	h := n.handler()
	if h == nil {
		return
	}
	n.m.received(m.Kind).Inc()
	h.ClusterDeliver(m)
}
