package dispatch

import (
	"strconv"
	"testing"

	"jim/codec"
)

// BenchmarkPrivateChat measures one private message through the
// dispatcher with the memory store: decoded, stored, delivered to the
// receiver's connection and acknowledged to the sender. Its allocations
// per message are what the collector has to keep up with at chat rates.
func BenchmarkPrivateChat(b *testing.B) {
	d, _ := newDispatcher(&testing.T{}, Options{})
	defer d.Close()
	from, to := login(&testing.T{}, d, "alice"), login(&testing.T{}, d, "bob")
	prefix := `{"cmd":11,"from":"alice","to":"bob","chatType":2,"msgType":0,"content":"a chat message of a typical length, about sixty bytes long.","id":"`
	body := make([]byte, 0, 256)
	delivered := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		body = append(body[:0], prefix...)
		body = strconv.AppendInt(body, int64(i), 10)
		body = append(body, `"}`...)
		// Handle takes ownership of the body.
		d.Handle(from, Packet{Cmd: codec.CmdChatReq, Body: append([]byte(nil), body...)})
		if i%512 == 511 {
			settle(d)
			delivered += frame(from.take(), to.take())
		}
	}
	settle(d)
	b.StopTimer()
	if delivered += frame(from.take(), to.take()); delivered != b.N {
		b.Fatalf("%d of %d messages delivered", delivered, b.N)
	}
}

// frame gets the TCP frame of every reply and delivery, as the gateway
// does, and returns how many deliveries there were.
func frame(replies, deliveries []*codec.Outbound) int {
	for _, o := range replies {
		o.TCP()
	}
	for _, o := range deliveries {
		o.TCP()
	}
	return len(deliveries)
}
