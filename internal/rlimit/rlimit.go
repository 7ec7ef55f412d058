// Package rlimit raises the process's open-file limit. Every connection, on
// either side of a load test, is a file descriptor, and the usual soft limit
// (often 1024) stops a gateway or a load generator far below what the
// machine's hard limit allows.
package rlimit

import "syscall"

// RaiseNoFile lifts the soft RLIMIT_NOFILE to the hard limit and returns the
// limit now in force.
func RaiseNoFile() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	if r.Cur < r.Max {
		r.Cur = r.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
			return 0, err
		}
	}
	return r.Cur, nil
}
