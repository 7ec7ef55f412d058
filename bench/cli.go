package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// MaxConnsPerProc is the most connections one process holds. The machine's
// hard limit is 20,000 descriptors per process; the rest covers the HTTP
// client, the epoll instances and the dial-time duplicates.
const MaxConnsPerProc = 15000

// listFlag is a repeatable flag that also accepts comma-separated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// options is everything the command line sets.
type options struct {
	cfg      Config
	jsonPath string
	procs    string
	quiet    bool
	worker   bool
}

func parseArgs(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("jimbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: jimbench idle|chat|group|push [flags]")
		fs.PrintDefaults()
	}
	var addrs, pids listFlag
	var srcIPs string
	c := &o.cfg
	fs.Var(&addrs, "addr", "server host:port; repeat or comma-separate to spread over several servers (default 127.0.0.1:8888)")
	fs.StringVar(&c.Proto, "proto", "tcp", "client protocol: tcp or ws")
	fs.IntVar(&c.Conns, "conns", 1000, "connections (one user each)")
	fs.DurationVar(&c.Duration, "duration", 30*time.Second, "measured run time after warm-up")
	fs.DurationVar(&c.Warmup, "warmup", 2*time.Second, "traffic before measuring starts")
	fs.Float64Var(&c.Rate, "rate", 1000, "messages per second, all senders together")
	fs.IntVar(&c.GroupSize, "group-size", 100, "members per group (group scenario)")
	fs.StringVar(&srcIPs, "src-ips", "", "local source addresses to spread ports over, e.g. 127.0.0.2-127.0.0.65")
	fs.Var(&pids, "server-pid", "server process to sample RSS and CPU of; repeatable")
	fs.StringVar(&o.jsonPath, "json", "", "write the result as one JSON object to this file")
	fs.StringVar(&o.procs, "procs", "auto", fmt.Sprintf("worker processes; auto keeps each at or under %d connections", MaxConnsPerProc))
	fs.IntVar(&c.ConnectRate, "connect-rate", 5000, "new connections per second, all processes together")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", 60*time.Second, "limit on the whole connect-and-login phase")
	fs.DurationVar(&c.LoginTimeout, "login-timeout", 0, "retry a connection whose login is unanswered this long (0: never; on an overloaded server a short one abandons logins it has queued and makes a retry storm)")
	fs.IntVar(&c.ConnectRetries, "connect-retries", 3, "redials of a user whose connection failed or went unanswered during the connect phase")
	fs.DurationVar(&c.Heartbeat, "heartbeat", 30*time.Second, "heartbeat interval per connection")
	fs.StringVar(&c.APIKey, "api-key", "", "X-API-Key for the HTTP API (push scenario)")
	fs.StringVar(&c.UserPrefix, "user-prefix", "bench", "user ids are this prefix plus an index")
	fs.StringVar(&c.Password, "password", "x", "login password")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress output")
	// Hidden: how the parent starts its workers.
	fs.BoolVar(&o.worker, "worker", false, "")
	fs.IntVar(&c.Lo, "worker-lo", 0, "")
	fs.IntVar(&c.Hi, "worker-hi", 0, "")

	// Accept the scenario before or after the flags.
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		c.Scenario = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return nil, err
		}
		if fs.NArg() > 0 {
			return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
		}
	}
	if len(addrs) == 0 {
		addrs = listFlag{"127.0.0.1:8888"}
	}
	c.Addrs = addrs
	ips, err := ParseIPRanges(srcIPs)
	if err != nil {
		return nil, err
	}
	c.SrcIPs = ips
	for _, p := range pids {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad -server-pid %q", p)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/status", n)); err != nil {
			return nil, fmt.Errorf("-server-pid %d: no such process", n)
		}
		c.ServerPIDs = append(c.ServerPIDs, n)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return o, nil
}

// Main is the jimbench command: it parses args (without the program name),
// runs the scenario in this process or in workers, prints the table to
// stdout and returns the exit status: 0 success, 1 run failure, 2 bad flags.
func Main(args []string, stdout, stderr io.Writer) int {
	o, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "jimbench:", err)
		return 2
	}
	if o.cfg.Scenario == ScenarioIdle {
		if err := smallBuffers(); err != nil {
			fmt.Fprintln(stderr, "jimbench:", err)
			return 1
		}
	}
	if o.worker {
		return runWorker(o, os.Stdin, stdout)
	}
	procs, err := o.procCount()
	if err != nil {
		fmt.Fprintln(stderr, "jimbench:", err)
		return 2
	}
	for _, a := range o.cfg.Addrs {
		c, err := net.DialTimeout("tcp", a, 3*time.Second)
		if err != nil {
			fmt.Fprintf(stderr, "jimbench: cannot reach server %s: %v\n", a, err)
			return 1
		}
		c.Close()
	}
	if !o.quiet {
		o.cfg.Progress = stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var res *Result
	if procs == 1 {
		res, err = Run(ctx, o.cfg)
	} else {
		res, err = RunParent(ctx, o.cfg, procs, os.Args[0], o.workerArgs)
	}
	if err != nil {
		fmt.Fprintln(stderr, "jimbench:", err)
		return 1
	}
	WriteTable(stdout, res)
	if o.jsonPath != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(o.jsonPath, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(stderr, "jimbench:", err)
			return 1
		}
	}
	return 0
}

func (o *options) procCount() (int, error) {
	n := o.cfg.Conns
	if o.procs == "auto" || o.procs == "" || o.procs == "0" {
		return (n + MaxConnsPerProc - 1) / MaxConnsPerProc, nil
	}
	p, err := strconv.Atoi(o.procs)
	if err != nil || p < 1 {
		return 0, fmt.Errorf("bad -procs %q (want auto or a positive number)", o.procs)
	}
	if p > n {
		p = n
	}
	if (n+p-1)/p > 19000 {
		return 0, fmt.Errorf("-procs %d puts over 19000 connections in one process; the open-file limit is 20000", p)
	}
	return p, nil
}

// workerArgs is the command line of the worker for users [lo, hi).
func (o *options) workerArgs(lo, hi int) []string {
	c := &o.cfg
	a := []string{c.Scenario, "-worker",
		"-worker-lo", strconv.Itoa(lo), "-worker-hi", strconv.Itoa(hi),
		"-addr", strings.Join(c.Addrs, ","),
		"-proto", c.Proto,
		"-conns", strconv.Itoa(c.Conns),
		"-duration", c.Duration.String(),
		"-warmup", c.Warmup.String(),
		"-rate", strconv.FormatFloat(c.Rate, 'g', -1, 64),
		"-group-size", strconv.Itoa(c.GroupSize),
		"-connect-rate", strconv.Itoa(c.ConnectRate),
		"-connect-timeout", c.ConnectTimeout.String(),
		"-login-timeout", c.LoginTimeout.String(),
		"-connect-retries", strconv.Itoa(c.ConnectRetries),
		"-heartbeat", c.Heartbeat.String(),
		"-api-key", c.APIKey,
		"-user-prefix", c.UserPrefix,
		"-password", c.Password,
	}
	if len(c.SrcIPs) > 0 {
		ips := make([]string, len(c.SrcIPs))
		for i, ip := range c.SrcIPs {
			ips[i] = ip.String()
		}
		a = append(a, "-src-ips", strings.Join(ips, ","))
	}
	return a
}

// WriteTable prints res as a two-column table.
func WriteTable(w io.Writer, res *Result) {
	row := func(k, f string, v ...any) { fmt.Fprintf(w, "%-26s "+f+"\n", append([]any{k}, v...)...) }
	row("scenario", "%s (%s)", res.Scenario, res.Proto)
	row("servers", "%s", strings.Join(res.Addrs, ","))
	row("processes", "%d", res.Procs)
	row("connections", "%d / %d in %.1fs", res.ConnsEstablished, res.ConnsTarget, res.ConnectSeconds)
	row("open at the end", "%d", res.ConnsLive)
	row("connect retries", "%d", res.ConnectRetries)
	for _, k := range sortedKinds(res.RetryKinds) {
		row("  "+k, "%d", res.RetryKinds[k])
	}
	row("errors", "%d", res.Errors)
	for _, k := range sortedKinds(res.ErrorKinds) {
		row("  "+k, "%d", res.ErrorKinds[k])
	}
	row("measured", "%.1fs", res.DurationSeconds)
	if res.Scenario != ScenarioIdle {
		row("sent", "%d (target %.0f/s)", res.Sent, res.Rate)
		row("acked / offline", "%d / %d", res.Acked, res.Offline)
		row("delivered", "%d of %d expected", res.Delivered, res.ExpectedDelivered)
		row("deliveries/s", "%.0f", res.DeliveriesPerSec)
		row("latency p50/p99/p999/max", "%.2f / %.2f / %.2f / %.2f ms", res.P50Ms, res.P99Ms, res.P999Ms, res.MaxMs)
		if lo, med, hi, worst, ok := timelineSummary(res.Timeline); ok {
			row("p99 by second min/med/max", "%.2f / %.2f / %.2f ms", lo, med, hi)
			row("worst second", "%.0fs in: p99 %.2f ms, max %.2f ms, %d messages", worst.At, worst.P99Ms, worst.MaxMs, worst.Count)
		}
	}
	row("heartbeat replies", "%d", res.Heartbeats)
	if res.ServerRSSBytes > 0 {
		row("server RSS", "%.1f MiB (before %.1f MiB)", float64(res.ServerRSSBytes)/(1<<20), float64(res.ServerRSSBeforeBytes)/(1<<20))
		row("server RSS per conn", "%.0f bytes", res.ServerRSSPerConnBytes)
		row("server CPU", "%.1f%%", res.ServerCPUPct)
	}
	row("jimbench CPU", "%.1f%%", res.BenchCPUPct)
}
