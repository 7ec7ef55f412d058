package dispatch

import (
	"fmt"
	"sync"
	"testing"

	"jim/codec"
)

// TestConcurrentChurn mixes logins, group chat and disconnects from many
// goroutines; it is meant for -race and checks the tables end up empty.
func TestConcurrentChurn(t *testing.T) {
	d, _ := newDispatcher(t, Options{DefaultGroups: []string{"g"}})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newConn()
			d.Handle(c, Packet{Cmd: codec.CmdLoginReq, Body: []byte(fmt.Sprintf(`{"userId":"u%d"}`, i%4))})
			for j := 0; j < 5; j++ {
				d.Handle(c, Packet{Cmd: codec.CmdChatReq, Body: []byte(`{"chatType":1,"groupId":"g","content":"x"}`)})
				d.HandleWS(c, []byte(`{"cmd":13}`))
			}
			d.Closed(c)
		}()
	}
	wg.Wait()
	settle(d)
	if n := d.Sessions(); n != 0 {
		t.Fatalf("%d sessions left", n)
	}
	if m := d.hub.groupOnline("g"); len(m) != 0 {
		t.Fatalf("online group table not empty: %v", m)
	}
}
