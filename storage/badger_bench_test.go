package storage

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkBadgerAppendDurable measures acknowledged (committed and synced)
// private messages per second with 1,000 concurrent writers, each in its own
// conversation and with a client id (so de-duplication is on the path), and
// the p99 time from Append to its ack.
func BenchmarkBadgerAppendDurable(b *testing.B) {
	benchDurable(b, BadgerOptions{GCInterval: -1})
}

func benchDurable(b *testing.B, o BadgerOptions) {
	s := openTestBadger(b, b.TempDir(), o)
	const writers = 1000
	content := "a chat message of a typical length, about sixty bytes long."
	var next atomic.Int64
	lat := make([][]time.Duration, writers)
	late := make([][]time.Duration, writers) // acks of appends begun after warmUp
	var wg sync.WaitGroup
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from, to := fmt.Sprint("u", w), fmt.Sprint("v", w)
			conv := PrivateConv(from, to)
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				m := &Message{Conv: conv, ChatType: ChatPrivate, From: from, To: to, Content: content,
					CreateTime: time.Now().UnixMilli(), ClientID: fmt.Sprint("c", i)}
				t0 := time.Now()
				if _, err := s.Append(ctx, m, nil); err != nil {
					b.Error(err)
					return
				}
				d := time.Since(t0)
				lat[w] = append(lat[w], d)
				if t0.Sub(start) >= warmUp {
					late[w] = append(late[w], d)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(len(all))/elapsed.Seconds(), "msgs/s")
		b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(all[len(all)*9/10].Microseconds())/1000, "p90-ms")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(all[len(all)*999/1000].Microseconds())/1000, "p999-ms")
		// CPU per message (user + system, every goroutine of the process,
		// Badger's compactions included) varies less with other load on
		// the machine than the rate does.
		b.ReportMetric(float64(cpu.Microseconds())/float64(len(all)), "cpu-us/msg")
	}
	// The first second of a fresh store (its memtable and log paged in
	// for the first time) holds most of the slow acks of a short run; the
	// p99 after it tells the two apart.
	if warm := slices.Concat(late...); len(warm) > 0 {
		slices.Sort(warm)
		b.ReportMetric(float64(warm[len(warm)*99/100].Microseconds())/1000, "p99-warm-ms")
	}
}

// BenchmarkBadgerAppendOpenLoop offers b.N private messages at a steady
// 5,000 and 20,000 a second, each from its own goroutine (2,000
// conversations), as a gateway does, instead of 1,000 writers that each
// wait for their ack: the store's ack latency at a load it carries, and
// its CPU per message when commits are small.
func BenchmarkBadgerAppendOpenLoop(b *testing.B) {
	for _, rate := range []int{5000, 20000} {
		b.Run(fmt.Sprint(rate, "/s"), func(b *testing.B) {
			s := openTestBadger(b, b.TempDir(), BadgerOptions{GCInterval: -1})
			content := "a chat message of a typical length, about sixty bytes long."
			lat := make([]time.Duration, b.N)
			var wg sync.WaitGroup
			interval := time.Second / time.Duration(rate)
			b.ResetTimer()
			cpu0 := cpuTime()
			start := time.Now()
			for i := range b.N {
				if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
					time.Sleep(d)
				}
				wg.Go(func() {
					w := i % 2000
					from, to := fmt.Sprint("u", w), fmt.Sprint("v", w)
					m := &Message{Conv: PrivateConv(from, to), ChatType: ChatPrivate, From: from, To: to,
						Content: content, CreateTime: time.Now().UnixMilli(), ClientID: fmt.Sprint("c", i)}
					t0 := time.Now()
					if _, err := s.Append(ctx, m, nil); err != nil {
						b.Error(err)
					}
					lat[i] = time.Since(t0)
				})
			}
			wg.Wait()
			elapsed, cpu := time.Since(start), cpuTime()-cpu0
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(100*cpu.Seconds()/elapsed.Seconds(), "cpu-%")
		})
	}
}

// warmUp is the start of a durable-append run that p99-warm-ms leaves out.
const warmUp = time.Second

// cpuTime is the user plus system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkBadgerHistoryPage reads pages of 100 from a conversation of
// 1,000,000 messages: the latest page, a page after a seq, and a page at
// an offset.
func BenchmarkBadgerHistoryPage(b *testing.B) {
	s := openTestBadger(b, b.TempDir(), BadgerOptions{GCInterval: -1})
	const n = 1_000_000
	conv := GroupConv("big")
	bulkLoad(b, s, conv, n)
	for _, c := range []struct {
		name string
		q    Query
	}{
		{"latest", Query{Latest: true, Count: 100}},
		{"afterSeq", Query{AfterSeq: n / 2, Count: 100}},
		{"offset", Query{Offset: n - 5000, Count: 100}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				h, err := s.History(ctx, conv, c.q)
				if err != nil || len(h) != 100 {
					b.Fatalf("page of %d, %v", len(h), err)
				}
			}
		})
	}
}

// BenchmarkBadgerBackupRestore backs up a store of 1,000,000 messages (one
// conversation) into a file and restores it into a new directory, once per
// iteration; it reports the backup's size and the seconds each step took.
func BenchmarkBadgerBackupRestore(b *testing.B) {
	s := openTestBadger(b, b.TempDir(), BadgerOptions{GCInterval: -1})
	bulkLoad(b, s, GroupConv("big"), 1_000_000)
	file := filepath.Join(b.TempDir(), "jim.backup")
	var backup, restore time.Duration
	var size int64
	b.ResetTimer()
	for i := range b.N {
		f, err := os.Create(file)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if err := s.Backup(f); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		backup += time.Since(t0)
		fi, _ := f.Stat()
		size = fi.Size()
		f.Close()
		f, _ = os.Open(file)
		t0 = time.Now()
		if err := RestoreBadger(filepath.Join(b.TempDir(), fmt.Sprint("r", i)), f, BadgerOptions{}); err != nil {
			b.Fatal(err)
		}
		restore += time.Since(t0)
		f.Close()
	}
	b.ReportMetric(float64(size)/1e6, "backup-MB")
	b.ReportMetric(backup.Seconds()/float64(b.N), "backup-s")
	b.ReportMetric(restore.Seconds()/float64(b.N), "restore-s")
}

// BenchmarkBadgerHistoryTimeScan reads a createTime window that matches
// nothing in a conversation of 1,000,000 messages, from the oldest and, for
// the latest page, from the newest: "first" with no time index (the whole
// conversation is scanned, as createTime is the sender's and seq does not
// order it; the scan indexes the full blocks it reads), "indexed" once a
// scan has.
func BenchmarkBadgerHistoryTimeScan(b *testing.B) {
	s := openTestBadger(b, b.TempDir(), BadgerOptions{GCInterval: -1})
	conv := GroupConv("big")
	bulkLoad(b, s, conv, 1_000_000)
	for _, c := range []struct {
		name string
		q    Query
	}{
		{"oldestFirst", Query{Begin: 1, End: 2, Count: 100}},
		{"latest", Query{Begin: 1, End: 2, Count: 100, Latest: true}},
	} {
		for _, indexed := range []bool{false, true} {
			name := c.name + "/first"
			if indexed {
				name = c.name + "/indexed"
			}
			b.Run(name, func(b *testing.B) {
				for b.Loop() {
					if !indexed {
						b.StopTimer()
						if err := s.db.DropPrefix(prefix1(pfxTime, conv)); err != nil {
							b.Fatal(err)
						}
						b.StartTimer()
					}
					if h, err := s.History(ctx, conv, c.q); err != nil || len(h) != 0 {
						b.Fatalf("%d messages, %v", len(h), err)
					}
				}
			})
		}
	}
}

// BenchmarkBadgerOfflineCapPass is the cap pass over 1,000,000 offline
// references of 1,000 users, none over the cap: the cost of counting,
// which every pass pays.
func BenchmarkBadgerOfflineCapPass(b *testing.B) {
	s := openTestBadger(b, b.TempDir(), BadgerOptions{GCInterval: -1, OfflineCap: -1})
	wb := s.db.NewWriteBatch()
	ref := encodeOffRef(nil, &Message{ChatType: ChatGroup, From: "u", GroupID: "g", Conv: GroupConv("g"), Seq: 1})
	for i := range 1_000_000 {
		if err := wb.Set(offKey(fmt.Sprint("user", i%1000), uint64(i+1)), ref); err != nil {
			b.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if n, err := s.enforceOfflineCap(10000); err != nil || n != 0 {
			b.Fatalf("dropped %d, %v", n, err)
		}
	}
}
