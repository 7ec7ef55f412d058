package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/netpoll"

	"jim/internal/rlimit"
)

// Scenario names.
const (
	ScenarioIdle  = "idle"
	ScenarioChat  = "chat"
	ScenarioGroup = "group"
	ScenarioPush  = "push"
)

// MaxConnsPerPair is the most connections placed on one (source address,
// destination) pair. The default ephemeral range 32768-60999 holds about
// 28,000 ports; staying at half leaves room for TIME_WAIT from earlier runs.
const MaxConnsPerPair = 14000

// Config describes one run. Lo and Hi select the users this process drives
// (global indexes [Lo, Hi)); Hi == 0 means all of [0, Conns).
type Config struct {
	Scenario       string
	Proto          string // "tcp" or "ws"
	Addrs          []string
	Conns          int
	Duration       time.Duration
	Warmup         time.Duration
	Rate           float64 // messages per second over all processes
	GroupSize      int
	SrcIPs         []netip.Addr
	ServerPIDs     []int
	ConnectRate    int // dials per second over all processes
	ConnectTimeout time.Duration
	// LoginTimeout ends a connection attempt whose login has gone
	// unanswered that long (0: no limit but ConnectTimeout).
	LoginTimeout time.Duration
	// ConnectRetries is how many more times a user whose attempt failed
	// for a transient cause (a failed dial, a close before the login reply,
	// LoginTimeout) is dialled again within the connect phase. A login the
	// server refuses is never retried.
	ConnectRetries int
	Heartbeat      time.Duration
	APIKey         string
	UserPrefix     string
	Password       string
	Lo, Hi         int

	// Progress, when set, receives a one-line status about every 200 ms.
	Progress io.Writer

	// Hooks used by worker processes to hold the phases in step with the
	// other workers; nil means "carry on".
	onProgress  func(Progress)
	afterLogin  func(established int)
	beforeClose func()
}

// Progress is a snapshot of a run in flight.
type Progress struct {
	Phase       string `json:"phase"`
	Target      int    `json:"target"`
	Established int64  `json:"established"`
	Failed      int64  `json:"failed"`
	Sent        int64  `json:"sent"`
	Delivered   int64  `json:"delivered"`
	Errors      int64  `json:"errors"`
}

// Result is the outcome of a run; its JSON form is jimbench's -json output.
type Result struct {
	Scenario         string   `json:"scenario"`
	Proto            string   `json:"proto"`
	Addrs            []string `json:"addrs"`
	Procs            int      `json:"procs"`
	ConnsTarget      int      `json:"conns_target"`
	ConnsEstablished int64    `json:"conns_established"`
	// ConnsLive is how many logged-in connections were still open when the
	// run ended, before jimbench closed them.
	ConnsLive int64 `json:"conns_live"`
	// ConnectRetries counts connection attempts of the connect phase that
	// failed for a transient cause and were tried again; RetryKinds says
	// why. A retried user that logs in counts once in ConnsEstablished.
	ConnectRetries        int64            `json:"connect_retries"`
	RetryKinds            map[string]int64 `json:"retry_kinds,omitempty"`
	ConnectSeconds        float64          `json:"connect_s"`
	Errors                int64            `json:"errors"`
	ErrorKinds            map[string]int64 `json:"error_kinds,omitempty"`
	DurationSeconds       float64          `json:"duration_s"`
	Rate                  float64          `json:"rate"`
	GroupSize             int              `json:"group_size,omitempty"`
	Sent                  int64            `json:"sent"`
	Acked                 int64            `json:"acked"`
	Offline               int64            `json:"offline"`
	Delivered             int64            `json:"delivered"`
	ExpectedDelivered     int64            `json:"expected_delivered"`
	DeliveriesPerSec      float64          `json:"deliveries_per_sec"`
	Heartbeats            int64            `json:"heartbeat_replies"`
	P50Ms                 float64          `json:"p50_ms"`
	P99Ms                 float64          `json:"p99_ms"`
	P999Ms                float64          `json:"p999_ms"`
	MaxMs                 float64          `json:"max_ms"`
	ServerRSSBeforeBytes  int64            `json:"server_rss_before_bytes"`
	ServerRSSBytes        int64            `json:"server_rss_bytes"`
	ServerRSSPerConnBytes float64          `json:"server_rss_per_conn_bytes"`
	ServerCPUPct          float64          `json:"server_cpu_pct"`
	BenchCPUPct           float64          `json:"bench_cpu_pct"`
	// LatencyHist is the histogram the percentiles above come from; absent
	// when no latency was measured (idle).
	LatencyHist *LatencyHist `json:"latency_hist,omitempty"`
	// Timeline is the latency of the messages sent in each second of the
	// measured run (each 1/600 of it in longer runs), so that a tail can
	// be placed in time; absent for idle.
	Timeline []TimelinePoint `json:"timeline,omitempty"`

	hist *Histogram
	tl   *timeline
}

// Validate checks cfg and fills defaults. Its errors are the "bad flags"
// class: the caller should exit with status 2.
func (cfg *Config) Validate() error {
	switch cfg.Scenario {
	case ScenarioIdle, ScenarioChat, ScenarioGroup, ScenarioPush:
	case "":
		return errors.New("missing scenario (idle, chat, group or push)")
	default:
		return fmt.Errorf("unknown scenario %q (want idle, chat, group or push)", cfg.Scenario)
	}
	switch cfg.Proto {
	case "":
		cfg.Proto = "tcp"
	case "tcp", "ws":
	default:
		return fmt.Errorf("bad -proto %q (want tcp or ws)", cfg.Proto)
	}
	if len(cfg.Addrs) == 0 {
		return errors.New("missing -addr")
	}
	for _, a := range cfg.Addrs {
		if i := strings.LastIndexByte(a, ':'); i < 0 || i == len(a)-1 {
			return fmt.Errorf("bad -addr %q (want host:port)", a)
		}
	}
	if cfg.Conns <= 0 {
		return errors.New("-conns must be positive")
	}
	if cfg.Scenario == ScenarioChat && cfg.Conns < 2 {
		return errors.New("chat needs -conns of at least 2")
	}
	if cfg.Duration <= 0 {
		return errors.New("-duration must be positive")
	}
	if cfg.Warmup < 0 {
		return errors.New("-warmup must not be negative")
	}
	if cfg.Scenario != ScenarioIdle && cfg.Rate <= 0 {
		return errors.New("-rate must be positive")
	}
	if cfg.GroupSize <= 0 {
		cfg.GroupSize = 100
	}
	if cfg.Scenario == ScenarioGroup && cfg.GroupSize > cfg.Conns {
		cfg.GroupSize = cfg.Conns
	}
	if cfg.ConnectRate <= 0 {
		cfg.ConnectRate = 5000
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 60 * time.Second
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 30 * time.Second
	}
	if cfg.UserPrefix == "" {
		cfg.UserPrefix = "bench"
	}
	if cfg.Password == "" {
		cfg.Password = "x"
	}
	pairs := len(cfg.Addrs) * max(1, len(cfg.SrcIPs))
	if cfg.Conns > pairs*MaxConnsPerPair {
		return fmt.Errorf("%d connections need at least %d source-address/server pairs at %d each; add -src-ips (e.g. 127.0.0.2-127.0.0.65)",
			cfg.Conns, (cfg.Conns+MaxConnsPerPair-1)/MaxConnsPerPair, MaxConnsPerPair)
	}
	if cfg.Hi == 0 {
		cfg.Lo, cfg.Hi = 0, cfg.Conns
	}
	if cfg.Lo < 0 || cfg.Hi > cfg.Conns || cfg.Lo >= cfg.Hi {
		return fmt.Errorf("bad worker range [%d,%d) for %d connections", cfg.Lo, cfg.Hi, cfg.Conns)
	}
	return nil
}

// share is the part of a global per-second budget that this process owns.
func (cfg *Config) share(total float64) float64 {
	return total * float64(cfg.Hi-cfg.Lo) / float64(cfg.Conns)
}

// UserName returns the user id of global index i.
func (cfg *Config) UserName(i int) string { return cfg.UserPrefix + strconv.Itoa(i) }

// groupName returns the group of global index i in the group scenario.
func (cfg *Config) groupName(i int) string {
	return cfg.UserPrefix + "-g" + strconv.Itoa(i/cfg.GroupSize)
}

// route picks the destination and source address of global index i: the
// destinations rotate fastest so that each server sees every source.
func (cfg *Config) route(i int) (string, netip.Addr) {
	dst := cfg.Addrs[i%len(cfg.Addrs)]
	if len(cfg.SrcIPs) == 0 {
		return dst, netip.Addr{}
	}
	return dst, cfg.SrcIPs[(i/len(cfg.Addrs))%len(cfg.SrcIPs)]
}

// ErrLogin wraps failures that mean the server refused the benchmark users.
var ErrLogin = errors.New("login refused")

type runner struct {
	cfg     *Config
	clients []*client
	hist    Histogram
	tl      *timeline // set before measuring starts; nil for idle

	established, failed             atomic.Int64
	sent, acked, offline, delivered atomic.Int64
	heartbeats, errs                atomic.Int64
	rejected                        atomic.Int64 // chats answered with an error status
	measureStart                    atomic.Int64 // unix ns; MaxInt64 until recording starts
	closing                         atomic.Bool
	retries                         atomic.Int64
	retryKinds                      map[string]int64 // guarded by errMu
	retryWG                         sync.WaitGroup   // redials waiting for their turn
	phase                           atomic.Value
	errMu                           sync.Mutex
	errKinds                        map[string]int64
	firstLoginErr, firstDialErr     string
	firstFailure                    string        // of any kind
	pendingLogins                   chan struct{} // one token per login sent and not yet answered
	loginRefused                    atomic.Bool
	runStart, runEnd                time.Time
	connectDur                      time.Duration
	groupSent                       []*groupSenderStat
}

func (r *runner) recording() bool { return time.Now().UnixNano() >= r.measureStart.Load() }

// fail counts one error under kind; err adds detail to the first one seen.
func (r *runner) fail(kind string, err error) {
	r.errs.Add(1)
	r.errMu.Lock()
	r.errKinds[kind]++
	r.errMu.Unlock()
	_ = err
}

func (r *runner) settleFailed(c *client, kind, msg string) {
	if c != nil && !c.settled.CompareAndSwap(false, true) {
		return
	}
	r.loginDone(c)
	r.failed.Add(1)
	r.fail(kind, nil)
	r.errMu.Lock()
	if kind == "dial" && r.firstDialErr == "" {
		r.firstDialErr = msg
	}
	if kind == "login" && r.firstLoginErr == "" {
		r.firstLoginErr = msg
	}
	if r.firstFailure == "" && msg != "" {
		r.firstFailure = kind + ": " + msg
	}
	r.errMu.Unlock()
}

// loginFailed is called by the read handler of c.
func (r *runner) loginFailed(c *client, msg string) {
	r.loginRefused.Store(true)
	r.settleFailed(c, "login", msg)
	c.closeFromHandler()
}

func (r *runner) loggedIn(c *client) {
	if !c.settled.CompareAndSwap(false, true) {
		// Answered after the connect phase gave up on it: it was counted
		// as failed, so it does not stay as an uncounted connection.
		c.closeFromHandler()
		return
	}
	r.loginDone(c)
	if r.cfg.Scenario == ScenarioGroup {
		var scratch []byte
		body := `{"cmd":7,"groupId":"` + r.cfg.groupName(c.idx) + `"}`
		if err := c.send(&scratch, cmdJoinGroup, []byte(body)); err != nil {
			r.fail("join write", err)
		}
	}
	r.established.Add(1)
}

func (r *runner) progress() Progress {
	ph, _ := r.phase.Load().(string)
	return Progress{
		Phase:       ph,
		Target:      r.cfg.Hi - r.cfg.Lo,
		Established: r.established.Load(),
		Failed:      r.failed.Load(),
		Sent:        r.sent.Load(),
		Delivered:   r.delivered.Load(),
		Errors:      r.errs.Load(),
	}
}

// Run drives one process's share of a scenario: connect and log in, hold or
// send for Warmup+Duration, then close. It samples the servers' RSS and CPU
// itself when ServerPIDs is set and it is not a worker. The run ends by
// itself; cancelling ctx ends it early with the results so far.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	local := cfg.afterLogin == nil && len(cfg.ServerPIDs) > 0
	var before, atRun, atEnd serverSample
	var sampleErr error
	if local {
		before, sampleErr = sampleServers(cfg.ServerPIDs)
		if sampleErr != nil {
			return nil, fmt.Errorf("server pid: %w", sampleErr)
		}
		cfg.afterLogin = func(int) { atRun, _ = sampleServers(cfg.ServerPIDs) }
		cfg.beforeClose = func() { atEnd, _ = sampleServers(cfg.ServerPIDs) }
	}
	res, err := run(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	res.Procs = 1
	if local {
		fillServer(res, before, atRun, atEnd)
	}
	return res, nil
}

// fillServer derives the server columns: RSS growth per connection from
// before dialling to the end of the run, CPU over the run phase.
func fillServer(res *Result, before, atRun, atEnd serverSample) {
	if atEnd.at.IsZero() {
		return
	}
	res.ServerRSSBeforeBytes = before.rss
	res.ServerRSSBytes = atEnd.rss
	if res.ConnsEstablished > 0 {
		res.ServerRSSPerConnBytes = float64(atEnd.rss-before.rss) / float64(res.ConnsEstablished)
	}
	if wall := atEnd.at.Sub(atRun.at); wall > 0 && !atRun.at.IsZero() {
		res.ServerCPUPct = 100 * float64(atEnd.cpu-atRun.cpu) / float64(wall)
	}
}

func run(ctx context.Context, cfg *Config) (*Result, error) {
	if _, err := rlimit.RaiseNoFile(); err != nil {
		return nil, fmt.Errorf("raise open-file limit: %w", err)
	}
	r := &runner{cfg: cfg, errKinds: map[string]int64{}, retryKinds: map[string]int64{}}
	r.measureStart.Store(math.MaxInt64)
	r.phase.Store("connect")

	stopProgress := r.startProgress()
	defer stopProgress()

	// Heartbeats start with the first login, not after the last: a worker
	// whose connect phase outlasts the server's heartbeat timeout must not
	// leave its early connections silent that long.
	r.newClients()
	hbCtx, hbStop := context.WithCancel(ctx)
	hbDone := make(chan struct{})
	go func() { defer close(hbDone); r.heartbeatLoop(hbCtx) }()
	stopHeartbeats := func() { hbStop(); <-hbDone }
	defer stopHeartbeats()

	t0 := time.Now()
	r.connect(ctx)
	r.connectDur = time.Since(t0)
	defer r.closeAll()

	if cfg.Scenario == ScenarioIdle {
		// The dials left garbage about as large as the live connections;
		// an idle run allocates little more, so the collector would keep
		// those pages resident for the whole hold. Hand them back now.
		debug.FreeOSMemory()
	}
	est := r.established.Load()
	switch {
	case r.loginRefused.Load():
		return nil, fmt.Errorf("%w: %s", ErrLogin, r.firstLoginErr)
	case est == 0 && r.firstDialErr != "":
		return nil, fmt.Errorf("cannot connect: %s", r.firstDialErr)
	case est == 0 && r.firstFailure != "":
		return nil, fmt.Errorf("no connection logged in: %s", r.firstFailure)
	case est == 0:
		return nil, fmt.Errorf("no connection logged in within %v", cfg.ConnectTimeout)
	}
	if cfg.Scenario == ScenarioGroup {
		// Joins carry no reply; give the server a moment to apply them
		// before the first publish so early messages reach full groups.
		sleepCtx(ctx, 300*time.Millisecond)
	}
	if cfg.afterLogin != nil {
		cfg.afterLogin(int(est))
	}

	r.phase.Store("run")
	cpu0 := selfCPU()
	r.runStart = time.Now()
	measureStart := r.runStart.Add(cfg.Warmup)
	if cfg.Scenario != ScenarioIdle {
		// Before measureStart: a delivery that sees it counted sees tl.
		r.tl = newTimeline(measureStart.UnixNano(), cfg.Duration)
	}
	r.measureStart.Store(measureStart.UnixNano())
	end := measureStart.Add(cfg.Duration)
	runCtx, cancel := context.WithDeadline(ctx, end)
	var wg sync.WaitGroup
	switch cfg.Scenario {
	case ScenarioChat, ScenarioGroup:
		r.startSenders(runCtx, &wg)
	case ScenarioPush:
		r.startPush(runCtx, &wg)
	}
	<-runCtx.Done()
	cancel()
	wg.Wait()
	stopHeartbeats()
	r.runEnd = time.Now()
	if r.runEnd.Before(measureStart) {
		measureStart = r.runEnd
	}
	r.phase.Store("drain")
	r.drain(ctx)
	cpu1 := selfCPU()
	if cfg.beforeClose != nil {
		cfg.beforeClose()
	}
	r.closing.Store(true)

	measured := r.runEnd.Sub(measureStart)
	res := r.result(measured)
	if wall := time.Since(r.runStart); wall > 0 {
		res.BenchCPUPct = 100 * float64(cpu1-cpu0) / float64(wall)
	}
	return res, nil
}

func (r *runner) result(measured time.Duration) *Result {
	cfg := r.cfg
	res := &Result{
		Scenario:         cfg.Scenario,
		Proto:            cfg.Proto,
		Addrs:            cfg.Addrs,
		ConnsTarget:      cfg.Hi - cfg.Lo,
		ConnsEstablished: r.established.Load(),
		ConnsLive:        r.live(),
		ConnectRetries:   r.retries.Load(),
		ConnectSeconds:   r.connectDur.Seconds(),
		Errors:           r.errs.Load(),
		DurationSeconds:  measured.Seconds(),
		Rate:             cfg.Rate,
		Sent:             r.sent.Load(),
		Acked:            r.acked.Load(),
		Offline:          r.offline.Load(),
		Delivered:        r.delivered.Load(),
		Heartbeats:       r.heartbeats.Load(),
		hist:             &r.hist,
		tl:               r.tl,
	}
	if cfg.Scenario == ScenarioGroup {
		res.GroupSize = cfg.GroupSize
	}
	r.errMu.Lock()
	if len(r.errKinds) > 0 {
		res.ErrorKinds = make(map[string]int64, len(r.errKinds))
		for k, v := range r.errKinds {
			res.ErrorKinds[k] = v
		}
	}
	if len(r.retryKinds) > 0 {
		res.RetryKinds = make(map[string]int64, len(r.retryKinds))
		for k, v := range r.retryKinds {
			res.RetryKinds[k] = v
		}
	}
	r.errMu.Unlock()
	res.ExpectedDelivered = r.expected()
	res.finish()
	return res
}

// live counts the logged-in connections still open.
func (r *runner) live() int64 {
	var n int64
	for _, c := range r.clients {
		if c.state.Load() == stReady && !c.dead.Load() {
			n++
		}
	}
	return n
}

// expected is how many deliveries the messages sent should produce, given
// which receivers are actually connected.
func (r *runner) expected() int64 {
	switch r.cfg.Scenario {
	case ScenarioChat, ScenarioPush:
		return r.sent.Load() - r.offline.Load() - r.rejected.Load()
	case ScenarioGroup:
		var n int64
		for _, s := range r.groupSent {
			n += s.sent.Load() * int64(s.members)
		}
		return n
	}
	return 0
}

// finish derives the rate and latency columns from the counters.
func (res *Result) finish() {
	if res.DurationSeconds > 0 {
		res.DeliveriesPerSec = float64(res.Delivered) / res.DurationSeconds
	}
	if res.hist != nil {
		res.P50Ms = res.hist.QuantileMs(0.50)
		res.P99Ms = res.hist.QuantileMs(0.99)
		res.P999Ms = res.hist.QuantileMs(0.999)
		res.MaxMs = float64(res.hist.Max()) / float64(time.Millisecond)
		res.LatencyHist = res.hist.Export()
	}
	res.Timeline = res.tl.points()
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// newClients creates this process's users, not yet connected.
func (r *runner) newClients() {
	cfg := r.cfg
	r.clients = make([]*client, cfg.Hi-cfg.Lo)
	for i := range r.clients {
		idx := cfg.Lo + i
		dst, _ := cfg.route(idx)
		r.clients[i] = &client{r: r, idx: idx, user: cfg.UserName(idx), ws: cfg.Proto == "ws", addr: dst}
	}
}

// maxPendingLogins bounds the logins a process has sent and not seen
// answered. Dialling only paces the sends; a server that falls behind would
// otherwise collect an ever longer queue of logins, until the oldest pass
// its login deadline and are dropped. With the bound, the connect rate
// settles at what the server sustains.
const maxPendingLogins = 256

// loginDone frees c's place among the pending logins, if it held one.
func (r *runner) loginDone(c *client) {
	if c != nil && c.pending.CompareAndSwap(true, false) {
		<-r.pendingLogins
	}
}

// connect dials this process's users at its share of ConnectRate from a
// bounded pool of dialling goroutines, and returns once every user has
// logged in or failed, or ConnectTimeout has passed.
func (r *runner) connect(ctx context.Context) {
	cfg := r.cfg
	n := len(r.clients)
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	r.pendingLogins = make(chan struct{}, maxPendingLogins)

	jobs := make(chan *client, 1024)
	var wg sync.WaitGroup
	for range min(n, 256) {
		wg.Go(func() {
			for c := range jobs {
				r.dialOne(ctx, c)
			}
		})
	}
	rate := cfg.share(float64(cfg.ConnectRate))
	if rate < 1 {
		rate = 1
	}
	start := time.Now()
feed:
	for i, c := range r.clients {
		if d := time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
			sleepCtx(ctx, d)
		}
		if r.loginRefused.Load() {
			break
		}
		select {
		case jobs <- c:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	// Redials still waiting end with the phase.
	defer func() { cancel(); r.retryWG.Wait() }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for r.established.Load()+r.failed.Load() < int64(n) && !r.loginRefused.Load() {
		select {
		case <-ctx.Done():
			// Whoever is still pending when time is up counts as failed.
			for _, c := range r.clients {
				if !c.settled.Load() {
					r.settleFailed(c, "connect timeout", "")
				}
			}
			return
		case <-tick.C:
		}
	}
}

func (r *runner) dialOne(ctx context.Context, c *client) {
	if ctx.Err() != nil {
		return // settled as a timeout by connect
	}
	select {
	case r.pendingLogins <- struct{}{}:
		c.pending.Store(true)
	case <-ctx.Done():
		return
	}
	// A new attempt: callbacks of an earlier connection of this user see
	// another generation and do nothing. That connection was closed at
	// least a back-off ago, so none of its handlers still runs.
	gen := c.gen.Add(1)
	c.pend = nil
	c.dead.Store(false)
	c.ours.Store(false)
	dst, src := r.cfg.route(c.idx)
	conn, err := dialConn(ctx, src, dst, r.cfg.ConnectTimeout)
	if err != nil {
		r.retryOrFail(ctx, c, gen, "dial", fmt.Sprintf("%s: %v", dst, err))
		return
	}
	c.conn = conn
	_ = conn.SetWriteTimeout(10 * time.Second)
	_ = conn.AddCloseCallback(func(conn netpoll.Connection) error {
		if c.gen.Load() != gen {
			return nil
		}
		return c.onClose(ctx, gen)
	})
	_ = conn.SetOnRequest(c.handlerFor(gen))
	if err := c.start(r.cfg.Password); err != nil {
		c.close()
		r.retryOrFail(ctx, c, gen, "dial", fmt.Sprintf("%s: %v", dst, err))
		return
	}
	if lt := r.cfg.LoginTimeout; lt > 0 {
		time.AfterFunc(lt, func() {
			if c.gen.Load() != gen || c.concluded.Load() >= gen {
				return
			}
			c.close()
			r.retryOrFail(ctx, c, gen, "login timeout", fmt.Sprintf("user %s: no login reply in %v", c.user, lt))
		})
	}
}

// conclude claims the outcome of c's attempt gen for the caller: only the
// first of the login reply, the login deadline, a close or a failed write
// decides what became of one attempt.
func (c *client) conclude(gen uint32) bool {
	return c.concluded.CompareAndSwap(gen-1, gen)
}

// retryOrFail ends c's attempt gen, which failed for a transient cause
// (kind): while the connect phase lasts and retries remain, the user is
// dialled again after a growing, jittered back-off, as a real client would;
// otherwise it counts as failed.
func (r *runner) retryOrFail(ctx context.Context, c *client, gen uint32, kind, msg string) {
	if !c.conclude(gen) {
		return
	}
	r.loginDone(c)
	if c.attempts >= r.cfg.ConnectRetries || ctx.Err() != nil || r.loginRefused.Load() {
		r.settleFailed(c, kind, msg)
		return
	}
	c.attempts++
	r.retries.Add(1)
	r.errMu.Lock()
	r.retryKinds[kind]++
	r.errMu.Unlock()
	backoff := time.Duration(1<<(c.attempts-1))*time.Second + rand.N(time.Second)
	r.retryWG.Go(func() {
		t := time.NewTimer(backoff)
		defer t.Stop()
		select {
		case <-t.C:
			r.dialOne(ctx, c)
		case <-ctx.Done():
		}
	})
}

func (r *runner) closeAll() {
	r.closing.Store(true)
	for _, c := range r.clients {
		if c.conn != nil {
			_ = c.conn.Close()
		}
	}
}

// heartbeatLoop sends each connection a heartbeat once per Heartbeat
// interval, spread evenly so the server never sees a synchronised burst.
func (r *runner) heartbeatLoop(ctx context.Context) {
	const step = 100 * time.Millisecond
	n := len(r.clients)
	body := []byte(`{"cmd":13,"hbbyte":"-127"}`)
	var scratch []byte
	t := time.NewTicker(step)
	defer t.Stop()
	// The first round starts one interval in: login counts as activity.
	// What is due follows the wall clock, not the ticks: on a saturated
	// machine ticks are dropped, and counting them let heartbeats fall so
	// far behind that the server's idle timeout closed the connections.
	first := time.Now().Add(r.cfg.Heartbeat)
	sent := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		el := time.Since(first)
		if el < 0 {
			continue
		}
		due := int(float64(n) * (float64(el) / float64(r.cfg.Heartbeat)))
		if due-sent > n {
			sent = due - n // at most one round behind
		}
		for ; sent < due; sent++ {
			c := r.clients[sent%n]
			if c.state.Load() == stReady && !c.dead.Load() {
				_ = c.send(&scratch, cmdHeartbeat, body)
			}
		}
	}
}

// groupSender is a publishing member and the size of its group (the
// expected deliveries per message, sender included).
type groupSenderStat struct {
	sent    atomic.Int64
	members int
}

// sender is one message source: a client and the fixed JSON around the
// timestamp it sends.
type sender struct {
	c      *client
	prefix []byte
	stat   *groupSenderStat
}

// startSenders spreads the senders over one goroutine per CPU, each pacing
// its slice at its share of the rate, so a single writer never becomes the
// bottleneck at high rates.
func (r *runner) startSenders(ctx context.Context, wg *sync.WaitGroup) {
	cfg := r.cfg
	var ss []sender
	for _, c := range r.clients {
		if c.state.Load() != stReady {
			continue
		}
		switch cfg.Scenario {
		case ScenarioChat:
			if c.idx%2 == 1 || c.idx+1 >= cfg.Hi {
				continue
			}
			ss = append(ss, sender{c: c, prefix: []byte(`{"cmd":11,"to":"` + cfg.UserName(c.idx+1) + `","chatType":2,"msgType":0,"id":"`)})
		case ScenarioGroup:
			if c.idx%cfg.GroupSize != 0 {
				continue
			}
			g := c.idx / cfg.GroupSize
			members := 0
			for i := g * cfg.GroupSize; i < min((g+1)*cfg.GroupSize, cfg.Hi); i++ {
				if i >= cfg.Lo && r.clients[i-cfg.Lo].state.Load() == stReady {
					members++
				}
			}
			st := &groupSenderStat{members: members}
			r.groupSent = append(r.groupSent, st)
			ss = append(ss, sender{c: c, stat: st, prefix: []byte(`{"cmd":11,"groupId":"` + cfg.groupName(c.idx) + `","chatType":1,"msgType":0,"id":"`)})
		}
	}
	if len(ss) == 0 {
		r.fail("no senders connected", nil)
		return
	}
	k := min(runtime.GOMAXPROCS(0), len(ss))
	rate := cfg.share(cfg.Rate) / float64(k)
	for w := range k {
		var mine []sender
		for i := w; i < len(ss); i += k {
			mine = append(mine, ss[i])
		}
		wg.Go(func() { r.sendLoop(ctx, mine, rate) })
	}
}

func (r *runner) sendLoop(ctx context.Context, ss []sender, rate float64) {
	var body, frame []byte
	var last int64
	next := 0
	pace(ctx, rate, func() {
		s := ss[next]
		next = (next + 1) % len(ss)
		if s.c.dead.Load() {
			return
		}
		// The send time is also the message's client id, which the ack
		// echoes; it is kept strictly increasing per loop, and so per
		// sender, because a server may drop a repeated id as a retry.
		now := time.Now().UnixNano()
		if now <= last {
			now = last + 1
		}
		last = now
		body = append(body[:0], s.prefix...)
		body = strconv.AppendInt(body, now, 10)
		body = append(body, `","content":"t=`...)
		body = strconv.AppendInt(body, now, 10)
		body = append(body, '"', '}')
		if err := s.c.send(&frame, cmdChat, body); err != nil {
			r.fail("send", err)
			return
		}
		if now >= r.measureStart.Load() {
			r.sent.Add(1)
			if s.stat != nil {
				s.stat.sent.Add(1)
			}
		}
	})
}

// pace calls fn rate times per second until ctx ends. It catches up after a
// stall, but by at most one second's worth, so a long pause does not turn
// into a burst the server never sees in real traffic.
func pace(ctx context.Context, rate float64, fn func()) {
	start := time.Now()
	var done float64
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		due := rate * time.Since(start).Seconds()
		if due-done > rate {
			done = due - rate
		}
		for done+1 <= due {
			if ctx.Err() != nil {
				return
			}
			fn()
			done++
		}
	}
}

// drain waits, up to two seconds, for replies to messages already sent:
// until every send is answered and deliveries stop changing.
func (r *runner) drain(ctx context.Context) {
	if r.cfg.Scenario == ScenarioIdle {
		return
	}
	deadline := time.Now().Add(2 * time.Second)
	last, stable := int64(-1), 0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		d := r.delivered.Load()
		answered := r.acked.Load()+r.offline.Load() >= r.sent.Load()
		if d == last && (answered || r.cfg.Scenario == ScenarioPush) {
			stable++
			if stable >= 3 {
				return
			}
		} else {
			stable = 0
		}
		last = d
		time.Sleep(100 * time.Millisecond)
	}
}

// startProgress reports progress about every 200 ms until the returned
// function is called.
func (r *runner) startProgress() func() {
	cfg := r.cfg
	if cfg.Progress == nil && cfg.onProgress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			p := r.progress()
			if cfg.onProgress != nil {
				cfg.onProgress(p)
			}
			if cfg.Progress != nil {
				printProgress(cfg.Progress, p, r.runStart, cfg)
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		if cfg.Progress != nil {
			fmt.Fprint(cfg.Progress, "\r\033[K")
		}
	}
}

func printProgress(w io.Writer, p Progress, runStart time.Time, cfg *Config) {
	switch p.Phase {
	case "connect":
		pct := 0
		if p.Target > 0 {
			pct = int(100 * (p.Established + p.Failed) / int64(p.Target))
		}
		bar := strings.Repeat("#", pct/5) + strings.Repeat(".", 20-pct/5)
		fmt.Fprintf(w, "\r\033[Kconnecting [%s] %d/%d logged in, %d failed", bar, p.Established, p.Target, p.Failed)
	default:
		el := time.Duration(0)
		if !runStart.IsZero() {
			el = time.Since(runStart).Truncate(time.Second)
		}
		fmt.Fprintf(w, "\r\033[K%s %v/%v conns=%d sent=%d delivered=%d errors=%d",
			p.Phase, el, cfg.Warmup+cfg.Duration, p.Established, p.Sent, p.Delivered, p.Errors)
	}
}

// sortedKinds lists error kinds in a stable order for the table.
func sortedKinds(m map[string]int64) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
