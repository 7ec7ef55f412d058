package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat. It
// is 100 on every mainstream Linux build and Go offers no sysconf to ask.
const clockTicks = 100

// readRSS returns a process's resident set size in bytes from
// /proc/<pid>/status.
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.Index(b, []byte("VmRSS:"))
	if i < 0 {
		return 0, fmt.Errorf("pid %d: no VmRSS in status", pid)
	}
	kb, ok := parseInt(bytes.TrimLeft(b[i+6:], " \t"))
	if !ok {
		return 0, fmt.Errorf("pid %d: bad VmRSS", pid)
	}
	return kb * 1024, nil
}

// readCPU returns a process's user plus system CPU time from
// /proc/<pid>/stat.
func readCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may contain spaces and parentheses; the fields after
	// the last ')' are fixed. utime and stime are fields 14 and 15 overall,
	// so the 12th and 13th after the state field.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("pid %d: bad stat", pid)
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("pid %d: short stat", pid)
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("pid %d: bad stat times", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// serverSample is the summed RSS and CPU time of the watched server
// processes at one moment.
type serverSample struct {
	at  time.Time
	rss int64
	cpu time.Duration
}

func sampleServers(pids []int) (serverSample, error) {
	s := serverSample{at: time.Now()}
	for _, pid := range pids {
		rss, err := readRSS(pid)
		if err != nil {
			return s, err
		}
		cpu, err := readCPU(pid)
		if err != nil {
			return s, err
		}
		s.rss += rss
		s.cpu += cpu
	}
	return s, nil
}

// selfCPU returns this process's user plus system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
