package gateway_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"jim/codec"
	"jim/dispatch"
	"jim/gateway"
	"jim/internal/jimtest"
)

// Slow consumers, tested as NATS tests them: a group floods at a steady rate,
// one member with a tiny receive buffer never reads. It must be cut off with
// reason slow_consumer once its outbound cap is reached, the server's heap
// must stay bounded meanwhile, and the other members must not notice: their
// p99 delivery latency stays within twice that of the same run without the
// slow member.

const (
	fanoutMembers  = 50 // including the sender and, in one run, the slow member
	fanoutInterval = 4 * time.Millisecond
	fanoutDuration = 3 * time.Second
	fanoutPadding  = 8 << 10 // bytes of content besides the timestamp
	fanoutCap      = 256 << 10
)

type fanoutResult struct {
	p99, p50      time.Duration
	sent          int
	slowCut       bool  // the slow member was disconnected as a slow consumer
	heapGrowth    int64 // peak HeapInuse during the flood minus the baseline
	cutAfter      time.Duration
	slowConsumers float64 // jim_slow_consumer_disconnects_total
}

func TestSlowConsumerFanout(t *testing.T) {
	if testing.Short() {
		t.Skip("timing test")
	}
	without := runFanout(t, false)
	with := runFanout(t, true)
	t.Logf("without the slow member: p50 %v p99 %v, %d messages, heap +%d KiB", without.p50, without.p99, without.sent, without.heapGrowth>>10)
	t.Logf("with the slow member:    p50 %v p99 %v, %d messages, heap +%d KiB, slow member cut after %v",
		with.p50, with.p99, with.sent, with.heapGrowth>>10, with.cutAfter.Round(10*time.Millisecond))

	if without.slowConsumers != 0 {
		t.Fatalf("run without a slow member cut %v slow consumers", without.slowConsumers)
	}
	if !with.slowCut || with.slowConsumers != 1 {
		t.Fatalf("slow member not cut as a slow consumer (metric %v)", with.slowConsumers)
	}
	// The flood to every member is several times the cap; the heap must
	// not hold it. The bound is generous: it allows for the clients'
	// own buffers in this process.
	for _, r := range []fanoutResult{without, with} {
		if r.heapGrowth > 64<<20 {
			t.Fatalf("heap grew by %d MiB during the flood", r.heapGrowth>>20)
		}
	}
	if raceEnabled {
		return // the detector saturates the box; the latencies mean nothing
	}
	// A noisy two-core box jitters by milliseconds either way, hence the
	// floor under the baseline.
	floor := max(without.p99, 20*time.Millisecond)
	if with.p99 > 2*floor {
		t.Fatalf("p99 with a slow member %v, more than twice %v (without: %v)", with.p99, floor, without.p99)
	}
}

// fanoutReader reads one member's deliveries and records their latency.
type fanoutReader struct {
	c     net.Conn
	br    *bufio.Reader
	lat   []time.Duration
	got   int
	err   error
	sawCh chan struct{} // closed when it sees the slow member's join notice
	saw   bool
}

func runFanout(t *testing.T, slow bool) fanoutResult {
	t.Helper()
	reg := prometheus.NewRegistry()
	ts := startServer(t, func(o *gateway.Options, do *dispatch.Options) {
		o.MaxOutbound = fanoutCap
		o.Registry = reg
		do.NoticeMaxMembers = -1 // every join notice to everyone, so readers see the slow member join
	})
	const group = "flood"
	joinBody := `{"cmd":7,"group_id":"` + group + `"}`

	sender := dialTCP(t, ts.Addr)
	sender.login("sender")
	sender.send(codec.CmdJoinGroupReq, joinBody)
	sender.expect(codec.CmdJoinGroupNotify)

	readers := make([]*fanoutReader, 0, fanoutMembers)
	for i := 0; len(readers) < fanoutMembers-2; i++ {
		c := dialTCP(t, ts.Addr)
		c.login(fmt.Sprintf("m%d", i))
		c.send(codec.CmdJoinGroupReq, joinBody)
		for {
			_, m := c.read()
			if u, _ := m["user"].(map[string]any); u != nil && u["userId"] == fmt.Sprintf("m%d", i) {
				break
			}
		}
		readers = append(readers, &fanoutReader{c: c.c, br: c.br, sawCh: make(chan struct{})})
	}
	if !slow {
		// The same number of fast readers in both runs.
		c := dialTCP(t, ts.Addr)
		c.login("extra")
		c.send(codec.CmdJoinGroupReq, joinBody)
		c.expect(codec.CmdJoinGroupNotify)
		readers = append(readers, &fanoutReader{c: c.c, br: c.br, sawCh: make(chan struct{})})
	}

	var wg sync.WaitGroup
	for _, r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.run()
		}()
	}

	if slow {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			})
		}}
		sc, err := d.Dial("tcp", ts.Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sc.Close() })
		// Login and join in one write; nothing is ever read.
		var b []byte
		b = codec.AppendTCP(b, codec.CmdLoginReq, 0, false, []byte(`{"cmd":5,"userId":"slow"}`))
		b = codec.AppendTCP(b, codec.CmdJoinGroupReq, 0, false, []byte(joinBody))
		if _, err := sc.Write(b); err != nil {
			t.Fatal(err)
		}
		select {
		case <-readers[0].sawCh:
		case <-time.After(10 * time.Second):
			t.Fatal("the slow member's join was never announced")
		}
	}

	baseline := gcHeapInuse()
	var peak int64
	var cutAfter time.Duration
	start := time.Now()
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tk.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				peak = max(peak, int64(ms.HeapInuse))
				if slow && cutAfter == 0 && !ts.D.Online("slow") {
					cutAfter = time.Since(start)
				}
			}
		}
	}()

	// The sender's replies (cmd 12) and its own copies are drained apart.
	go func() { _, _ = io.Copy(io.Discard, sender.br) }()
	pad := strings.Repeat("x", fanoutPadding)
	tk := time.NewTicker(fanoutInterval)
	sent := 0
	end := time.Now().Add(fanoutDuration)
	for now := range tk.C {
		if now.After(end) {
			break
		}
		body := `{"cmd":11,"chatType":1,"groupId":"` + group + `","msgType":0,"content":"ts=` +
			strconv.FormatInt(time.Now().UnixNano(), 10) + ";" + pad + `"}`
		if _, err := sender.c.Write(codec.AppendTCP(nil, codec.CmdChatReq, 0, false, []byte(body))); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	tk.Stop()

	// Every fast reader gets every message.
	deadline := time.Now().Add(10 * time.Second)
	for _, r := range readers {
		for r.count() < sent && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	close(stopSampling)
	<-sampled
	for _, r := range readers {
		r.c.Close()
	}
	wg.Wait()

	var all []time.Duration
	for i, r := range readers {
		if r.got != sent {
			t.Fatalf("reader %d got %d of %d messages (%v)", i, r.got, sent, r.err)
		}
		all = append(all, r.lat...)
	}
	slices.Sort(all)
	res := fanoutResult{
		p99:           all[len(all)*99/100],
		p50:           all[len(all)/2],
		sent:          sent,
		heapGrowth:    peak - baseline,
		cutAfter:      cutAfter,
		slowConsumers: metricValue(t, reg, "jim_slow_consumer_disconnects_total"),
	}
	if slow {
		res.slowCut = labeledCounter(t, reg, "jim_disconnects_total", "reason", "slow_consumer") == 1 &&
			!ts.D.Online("slow")
	}
	return res
}

func (r *fanoutReader) count() int {
	// got is written by the reader goroutine while the test polls it.
	fanoutMu.Lock()
	defer fanoutMu.Unlock()
	return r.got
}

var fanoutMu sync.Mutex

var tsMarker = []byte(`ts=`)

func (r *fanoutReader) run() {
	for {
		cmd, body, err := jimtest.ReadFrame(r.br)
		now := time.Now()
		if err != nil {
			r.err = err
			return
		}
		switch cmd {
		case codec.CmdChatReq:
			i := bytes.Index(body, tsMarker)
			if i < 0 {
				continue
			}
			rest := body[i+len(tsMarker):]
			j := bytes.IndexByte(rest, ';')
			if j < 0 {
				r.err = fmt.Errorf("bad content %q", body)
				return
			}
			ns, err := strconv.ParseInt(string(rest[:j]), 10, 64)
			if err != nil {
				r.err = err
				return
			}
			fanoutMu.Lock()
			r.lat = append(r.lat, now.Sub(time.Unix(0, ns)))
			r.got++
			fanoutMu.Unlock()
		case codec.CmdJoinGroupNotify:
			if !r.saw && bytes.Contains(body, []byte(`"userId":"slow"`)) {
				r.saw = true
				close(r.sawCh)
			}
		}
	}
}

// gcHeapInuse is HeapInuse after a collection.
func gcHeapInuse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}
