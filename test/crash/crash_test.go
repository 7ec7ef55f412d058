// Package crash kills a real jimd with SIGKILL under chat load, restarts it
// on the same data directory, and checks that every message whose ack a
// client received survived exactly once, with gap-free sequence numbers.
//
// The normal run does 3 short trials; JIM_SOAK=1 does 20 longer ones and
// prints the counts.
package crash

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"jim/codec"
	"jim/internal/jimtest"
)

const (
	senders   = 4
	recipient = "r"
	window    = 64 // messages in flight per sender
)

func TestCrashRecovery(t *testing.T) {
	trials, minRun, maxRun := 3, 300*time.Millisecond, 1200*time.Millisecond
	soak := os.Getenv("JIM_SOAK") != ""
	if soak {
		trials, minRun, maxRun = 20, 500*time.Millisecond, 4*time.Second
	}
	bin := jimtest.BuildJimd(t)
	dir := filepath.Join(t.TempDir(), "data")
	acked := map[string]map[string]bool{} // sender -> contents acked
	for i := range senders {
		acked[sender(i)] = map[string]bool{}
	}
	for trial := 0; trial < trials; trial++ {
		srv := startJimd(t, bin, dir)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		n := 0
		for i := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got := drive(srv.Addr, sender(i), trial, stop)
				mu.Lock()
				for _, c := range got {
					acked[sender(i)][c] = true
				}
				n += len(got)
				mu.Unlock()
			}()
		}
		run := minRun + time.Duration(rand.Int64N(int64(maxRun-minRun)))
		time.Sleep(run)
		srv.Kill(t)
		close(stop)
		wg.Wait()
		if soak {
			t.Logf("trial %d: killed after %v, %d acks", trial+1, run.Round(time.Millisecond), n)
		}
		if n == 0 {
			t.Fatalf("trial %d: no message was acknowledged", trial+1)
		}
	}

	srv := startJimd(t, bin, dir)
	defer srv.Kill(t)
	var totalAcked, found, lost, dups int
	for i := range senders {
		s := sender(i)
		hist := history(t, srv.Addr, s)
		seen := map[string]int{}
		for k, m := range hist {
			if m.Seq != uint64(k+1) {
				t.Errorf("%s: message %d has seq %d: sequence not gap-free from 1", s, k+1, m.Seq)
				break
			}
			seen[m.Content]++
		}
		for c, k := range seen {
			if k > 1 {
				dups += k - 1
				t.Errorf("%s: %q stored %d times", s, c, k)
			}
		}
		for c := range acked[s] {
			totalAcked++
			if seen[c] > 0 {
				found++
			} else {
				lost++
				if lost <= 10 {
					t.Errorf("%s: acknowledged message %q is not in history", s, c)
				}
			}
		}
	}
	t.Logf("%d trials: acked %d, found %d, lost %d, duplicated %d", trials, totalAcked, found, lost, dups)
	if soak {
		fmt.Printf("crash soak: %d trials: acked %d, found %d, lost %d, duplicated %d\n", trials, totalAcked, found, lost, dups)
	}
}

func sender(i int) string { return fmt.Sprint("s", i+1) }

// startJimd starts jimd on a free loopback port over dir and waits until it
// accepts connections.
func startJimd(t *testing.T, bin, dir string) *jimtest.Jimd {
	t.Helper()
	return jimtest.StartJimd(t, bin, "jimd", "-data", dir, "-log-level", "warn",
		"-heartbeat-timeout", "0", "-auth-timeout", "0", "-event-loops", "2")
}

type conn struct {
	c net.Conn
	r *bufio.Reader
}

func dial(addr, user string) (*conn, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	cn := &conn{c: c, r: bufio.NewReaderSize(c, 64<<10)}
	if err := cn.send(codec.CmdLoginReq, fmt.Sprintf(`{"cmd":5,"userId":%q}`, user)); err != nil {
		c.Close()
		return nil, err
	}
	for {
		f, err := cn.read()
		if err != nil {
			c.Close()
			return nil, err
		}
		if f.Cmd == codec.CmdLoginResp {
			return cn, nil
		}
	}
}

func (c *conn) send(cmd codec.Cmd, body string) error {
	_, err := c.c.Write(codec.AppendTCP(nil, cmd, 0, false, []byte(body)))
	return err
}

func (c *conn) read() (codec.TCPFrame, error) {
	hdr := make([]byte, 7)
	if _, err := io.ReadFull(c.r, hdr[:7]); err != nil {
		return codec.TCPFrame{}, err
	}
	// 01 51 cmd len(4): the body length is the last 4 header bytes.
	n := int(hdr[3])<<24 | int(hdr[4])<<16 | int(hdr[5])<<8 | int(hdr[6])
	buf := make([]byte, 7+n)
	copy(buf, hdr)
	if _, err := io.ReadFull(c.r, buf[7:]); err != nil {
		return codec.TCPFrame{}, err
	}
	f, m, err := codec.DecodeTCP(buf, 1<<26)
	if err == nil && m != len(buf) {
		err = fmt.Errorf("frame of %d bytes decoded as %d", len(buf), m)
	}
	return f, err
}

type resp struct {
	Code    int             `json:"code"`
	Command int             `json:"command"`
	Data    json.RawMessage `json:"data"`
}

// drive sends chat messages from user to the recipient until the server
// dies or stop is closed, keeping up to window in flight, and returns the
// contents of the messages the server acknowledged.
func drive(addr, user string, trial int, stop chan struct{}) []string {
	c, err := dial(addr, user)
	if err != nil {
		return nil
	}
	defer c.c.Close()
	go func() { <-stop; c.c.Close() }()
	slots := make(chan struct{}, window)
	var acked []string
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			f, err := c.read()
			if err != nil {
				return
			}
			if f.Cmd != codec.CmdChatResp {
				continue
			}
			var r resp
			var a codec.ChatAck
			if json.Unmarshal(f.Body, &r) == nil && (r.Code == 10000 || r.Code == 10001) &&
				json.Unmarshal(r.Data, &a) == nil && a.Seq > 0 && a.ClientID != "" {
				acked = append(acked, a.ClientID)
			}
			select {
			case <-slots:
			default:
			}
		}
	}()
	for i := 0; ; i++ {
		select {
		case slots <- struct{}{}:
		case <-readDone:
			return acked
		}
		// The client id is also the content, so history can be matched.
		id := fmt.Sprintf("%s-t%d-%d", user, trial, i)
		body := fmt.Sprintf(`{"cmd":11,"to":%q,"chatType":2,"msgType":0,"content":%q,"id":%q}`, recipient, id, id)
		if c.send(codec.CmdChatReq, body) != nil {
			<-readDone
			return acked
		}
	}
}

// history fetches user's whole private history with the recipient, paging
// with afterSeq.
func history(t *testing.T, addr, user string) []*codec.ChatBody {
	t.Helper()
	c, err := dial(addr, user)
	if err != nil {
		t.Fatal(err)
	}
	defer c.c.Close()
	c.c.SetDeadline(time.Now().Add(60 * time.Second))
	var out []*codec.ChatBody
	var after uint64
	for {
		body := fmt.Sprintf(`{"cmd":19,"type":1,"userId":%q,"fromUserId":%q,"afterSeq":%d,"count":1000}`, user, recipient, after)
		if err := c.send(codec.CmdGetMessageReq, body); err != nil {
			t.Fatal(err)
		}
		var f codec.TCPFrame
		for {
			if f, err = c.read(); err != nil {
				t.Fatal(err)
			}
			if f.Cmd == codec.CmdGetMessageResp {
				break
			}
		}
		var r resp
		var md codec.MessageData
		if err := json.Unmarshal(f.Body, &r); err != nil || r.Code != int(codec.StatusGetHistoryMsgOK) {
			t.Fatalf("history reply %s (%v)", f.Body, err)
		}
		if err := json.Unmarshal(r.Data, &md); err != nil {
			t.Fatal(err)
		}
		page := md.Friends[recipient]
		if len(page) == 0 {
			return out
		}
		out = append(out, page...)
		after = page[len(page)-1].Seq
	}
}
