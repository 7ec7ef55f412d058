package dispatch

import "jim/storage"

// DefaultMaxReplyBytes bounds the messages of one cmd-20 reply (offline or
// history) when Options.MaxReplyBytes is zero.
//
// Counting messages alone does not bound a reply: a thousand messages of up
// to a megabyte each would make a reply of a gigabyte, and any reply over
// the gateway's per-connection outbound limit disconnects the client as a
// slow consumer. An offline queue holding a few megabytes could then never
// be fetched: every fetch ends the connection and nothing is acknowledged.
const DefaultMaxReplyBytes = 2 << 20

// jsonStrLen bounds s's length as a JSON string: a control character may
// take six bytes, a quote or a backslash two.
func jsonStrLen(s string) int {
	n := len(s) + 2
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20:
			n += 5
		case c == '"' || c == '\\':
			n++
		}
	}
	return n
}

// msgJSONLen bounds m's size in a cmd-20 reply: its strings escaped, its
// extras as stored, and the field names and numbers.
func msgJSONLen(m *storage.Message) int {
	return jsonStrLen(m.Content) + len(m.Extras) + jsonStrLen(m.ID) + jsonStrLen(m.From) +
		jsonStrLen(m.To) + jsonStrLen(m.GroupID) + 160
}

// fitOldest returns the longest run of msgs from the first whose JSON fits
// in budget, and never less than one message, so that a client asking again
// always advances.
func fitOldest(msgs []*storage.Message, budget int) []*storage.Message {
	n := 0
	for i, m := range msgs {
		if n += msgJSONLen(m); n > budget && i > 0 {
			return msgs[:i]
		}
	}
	return msgs
}

// fitNewest is fitOldest from the last message back: the latest page keeps
// its most recent messages.
func fitNewest(msgs []*storage.Message, budget int) []*storage.Message {
	n := 0
	for i := len(msgs) - 1; i >= 0; i-- {
		if n += msgJSONLen(msgs[i]); n > budget && i < len(msgs)-1 {
			return msgs[i+1:]
		}
	}
	return msgs
}
