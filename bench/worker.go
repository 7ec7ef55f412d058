package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"jim/internal/rlimit"
)

// workerEvent is one line a worker writes to its stdout. The parent answers
// "go" after every worker reported "connected", so that all workers measure
// the same interval, and "close" after every worker reported "ran", so the
// server is sampled while every connection is still open.
type workerEvent struct {
	Event       string            `json:"event"` // progress, connected, ran, result, fatal
	Progress    *Progress         `json:"progress,omitempty"`
	Established int               `json:"established,omitempty"`
	Result      *Result           `json:"result,omitempty"`
	Hist        *HistSnapshot     `json:"hist,omitempty"`
	Timeline    *TimelineSnapshot `json:"timeline,omitempty"`
	Error       string            `json:"error,omitempty"`
}

func runWorker(o *options, stdin io.Reader, stdout io.Writer) int {
	var mu sync.Mutex
	enc := json.NewEncoder(stdout)
	emit := func(e workerEvent) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(e)
	}
	in := bufio.NewScanner(stdin)
	// A closed stdin means the parent is gone; carrying on is harmless
	// because the run is bounded anyway.
	wait := func(word string) {
		for in.Scan() {
			if strings.TrimSpace(in.Text()) == word {
				return
			}
		}
	}
	cfg := o.cfg
	cfg.ServerPIDs = nil
	cfg.onProgress = func(p Progress) { emit(workerEvent{Event: "progress", Progress: &p}) }
	cfg.afterLogin = func(n int) {
		emit(workerEvent{Event: "connected", Established: n})
		wait("go")
	}
	cfg.beforeClose = func() {
		emit(workerEvent{Event: "ran"})
		wait("close")
	}
	res, err := run(context.Background(), &cfg)
	if err != nil {
		emit(workerEvent{Event: "fatal", Error: err.Error()})
		return 1
	}
	snap := res.hist.Snapshot()
	res.LatencyHist, res.Timeline = nil, nil // the parent rebuilds them
	emit(workerEvent{Event: "result", Result: res, Hist: &snap, Timeline: res.tl.snapshot()})
	return 0
}

type workerProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	target int
	last   Progress
	state  string // started, connected, ran, done, failed
}

type procEvent struct {
	w   int
	ev  workerEvent
	err error // set on the final message of a worker whose stdout ended
}

// RunParent runs cfg over procs worker processes started as exe with the
// arguments argsFor(lo, hi) returns, keeps them in step, samples the servers
// and merges the workers' results. Users are split on pair or group
// boundaries so that every conversation stays inside one worker.
func RunParent(ctx context.Context, cfg Config, procs int, exe string, argsFor func(lo, hi int) []string) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, err := rlimit.RaiseNoFile(); err != nil {
		return nil, fmt.Errorf("raise open-file limit: %w", err)
	}
	unit := 1
	switch cfg.Scenario {
	case ScenarioChat:
		unit = 2
	case ScenarioGroup:
		unit = cfg.GroupSize
	}
	chunk := (cfg.Conns + procs - 1) / procs
	chunk = (chunk + unit - 1) / unit * unit
	if chunk > 19000 {
		return nil, fmt.Errorf("group size %d does not split into workers of under 19000 connections", cfg.GroupSize)
	}

	var before, atRun, atEnd serverSample
	if len(cfg.ServerPIDs) > 0 {
		var err error
		if before, err = sampleServers(cfg.ServerPIDs); err != nil {
			return nil, fmt.Errorf("server pid: %w", err)
		}
	}

	// Everything is bounded: a worker that hangs is killed at the deadline.
	// The margin covers starting the workers, the wait for the slowest to
	// report "connected" and the drain; with dozens of workers on a loaded
	// machine one minute was too little (a run was cut 7 s short of its
	// hold).
	// A fifth of the run more covers a connect phase that ends late on a
	// machine at a load average of 200 (a million-connection run was cut
	// while closing its connections with a fixed 3 minutes).
	limit := cfg.ConnectTimeout + cfg.Warmup + cfg.Duration + 3*time.Minute + (cfg.ConnectTimeout+cfg.Duration)/5
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()

	events := make(chan procEvent, 256)
	var ws []*workerProc
	var readers sync.WaitGroup
	kill := func() {
		for _, w := range ws {
			if w.cmd.Process != nil {
				_ = w.cmd.Process.Kill()
			}
		}
	}
	for lo := 0; lo < cfg.Conns; lo += chunk {
		hi := min(lo+chunk, cfg.Conns)
		cmd := exec.Command(exe, argsFor(lo, hi)...)
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			kill()
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			kill()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			kill()
			return nil, fmt.Errorf("start worker: %w", err)
		}
		i := len(ws)
		ws = append(ws, &workerProc{cmd: cmd, stdin: stdin, target: hi - lo, state: "started"})
		readers.Go(func() {
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 64<<10), 16<<20)
			for sc.Scan() {
				var ev workerEvent
				if json.Unmarshal(sc.Bytes(), &ev) == nil {
					events <- procEvent{w: i, ev: ev}
				}
			}
			werr := cmd.Wait()
			if werr == nil {
				werr = errors.New("worker exited")
			}
			events <- procEvent{w: i, err: werr}
		})
	}
	defer func() {
		kill()
		go func() { readers.Wait(); close(events) }()
		for range events {
		}
	}()

	total := &Result{hist: new(Histogram), ErrorKinds: map[string]int64{}}
	if cfg.Scenario != ScenarioIdle {
		// Slot i of every worker is the same part of the run.
		total.tl = newTimeline(0, cfg.Duration)
	}
	count := func(state string) int {
		n := 0
		for _, w := range ws {
			if w.state == state {
				n++
			}
		}
		return n
	}
	var runStart time.Time
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	tell := func(word string) {
		for _, w := range ws {
			_, _ = io.WriteString(w.stdin, word+"\n")
		}
	}
	for count("done") < len(ws) {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("workers did not finish in time (%v)", limit)
		case <-tick.C:
			if cfg.Progress != nil {
				printProgress(cfg.Progress, sumProgress(ws), runStart, &cfg)
			}
			continue
		case pe := <-events:
			w := ws[pe.w]
			switch {
			case pe.err != nil:
				if w.state != "done" {
					return nil, fmt.Errorf("worker %d failed: %v", pe.w, pe.err)
				}
			case pe.ev.Event == "progress" && pe.ev.Progress != nil:
				w.last = *pe.ev.Progress
			case pe.ev.Event == "fatal":
				return nil, errors.New(pe.ev.Error)
			case pe.ev.Event == "connected":
				w.state = "connected"
				if count("connected") == len(ws) {
					if len(cfg.ServerPIDs) > 0 {
						atRun, _ = sampleServers(cfg.ServerPIDs)
					}
					runStart = time.Now()
					tell("go")
				}
			case pe.ev.Event == "ran":
				w.state = "ran"
				if count("ran") == len(ws) {
					if len(cfg.ServerPIDs) > 0 {
						atEnd, _ = sampleServers(cfg.ServerPIDs)
					}
					tell("close")
				}
			case pe.ev.Event == "result" && pe.ev.Result != nil:
				w.state = "done"
				mergeResult(total, pe.ev.Result, pe.ev.Hist)
				total.tl.merge(pe.ev.Timeline)
			}
		}
	}
	if cfg.Progress != nil {
		fmt.Fprint(cfg.Progress, "\r\033[K")
	}
	total.Scenario, total.Proto, total.Addrs = cfg.Scenario, cfg.Proto, cfg.Addrs
	total.Procs, total.Rate = len(ws), cfg.Rate
	if cfg.Scenario == ScenarioGroup {
		total.GroupSize = cfg.GroupSize
	}
	if len(total.ErrorKinds) == 0 {
		total.ErrorKinds = nil
	}
	total.finish()
	fillServer(total, before, atRun, atEnd)
	return total, nil
}

func sumProgress(ws []*workerProc) Progress {
	var p Progress
	p.Phase = "connect"
	running := true
	for _, w := range ws {
		p.Target += w.target
		p.Established += w.last.Established
		p.Failed += w.last.Failed
		p.Sent += w.last.Sent
		p.Delivered += w.last.Delivered
		p.Errors += w.last.Errors
		if w.last.Phase == "connect" || w.last.Phase == "" {
			running = false
		}
	}
	if running {
		p.Phase = "run"
	}
	return p
}

// mergeResult adds one worker's counters to the total; rates and
// percentiles are derived again afterwards from the sums and the merged
// histogram.
func mergeResult(t, r *Result, h *HistSnapshot) {
	t.ConnsTarget += r.ConnsTarget
	t.ConnsEstablished += r.ConnsEstablished
	t.ConnsLive += r.ConnsLive
	t.ConnectRetries += r.ConnectRetries
	for k, v := range r.RetryKinds {
		if t.RetryKinds == nil {
			t.RetryKinds = map[string]int64{}
		}
		t.RetryKinds[k] += v
	}
	t.ConnectSeconds = max(t.ConnectSeconds, r.ConnectSeconds)
	t.Errors += r.Errors
	for k, v := range r.ErrorKinds {
		t.ErrorKinds[k] += v
	}
	t.DurationSeconds = max(t.DurationSeconds, r.DurationSeconds)
	t.Sent += r.Sent
	t.Acked += r.Acked
	t.Offline += r.Offline
	t.Delivered += r.Delivered
	t.ExpectedDelivered += r.ExpectedDelivered
	t.Heartbeats += r.Heartbeats
	t.BenchCPUPct += r.BenchCPUPct
	if h != nil {
		t.hist.MergeSnapshot(*h)
	}
}
