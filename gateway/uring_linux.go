//go:build linux

package gateway

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// io_uring ABI (include/uapi/linux/io_uring.h). Only what a batch of
// non-blocking socket sends needs.
const (
	uringOpSend         = 26     // IORING_OP_SEND, Linux 5.6
	uringSetupSubmitAll = 1 << 7 // IORING_SETUP_SUBMIT_ALL, 5.18: a failing SQE does not stop the rest
	uringSetupCoopTask  = 1 << 8 // IORING_SETUP_COOP_TASKRUN, 5.19: no IPI for completion work
	uringFeatSingleMmap = 1 << 0 // IORING_FEAT_SINGLE_MMAP, 5.4
	uringEnterGetEvents = 1 << 0 // IORING_ENTER_GETEVENTS
	uringOffSQRing      = 0      // IORING_OFF_SQ_RING
	uringOffSQEs        = 0x10000000
	uringSQESize        = 64
	uringCQESize        = 16
	uringResultUnknown  = int32(-1 << 31)
)

type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  uringSQOffsets
	cqOff                                                                  uringCQOffsets
}

type uringSQOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type uringCQOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type uringSQE struct {
	opcode   uint8
	flags    uint8
	ioprio   uint16
	fd       int32
	off      uint64
	addr     uint64
	len      uint32
	msgFlags uint32
	userData uint64
	_        [3]uint64
}

type uringCQE struct {
	userData uint64
	res      int32
	flags    uint32
}

// ring is an io_uring instance owned by one event loop. A pass that writes
// many connections hands the kernel all of its sends in one io_uring_enter
// instead of one write(2) each: on this project's reference VM a system call
// is dear, and 5,000 loopback sends took 26–28 ms that way against 40–58 ms
// as separate writes (docs/BENCHMARKS.md, "io_uring"). Only the loop's
// goroutine uses it.
type ring struct {
	fd      int
	entries uint32
	mem     []byte // SQ and CQ rings, one mapping
	sqeMem  []byte

	sqHead, sqTail *uint32
	sqMask         uint32
	sqArray        []uint32
	sqes           []uringSQE
	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           []uringCQE
}

// newRing sets up a ring of entries submission slots. It fails where
// io_uring is missing, too old (before 5.19 for the flags used) or forbidden
// (io_uring_disabled, seccomp); the caller then writes with write(2).
func newRing(entries uint32) (*ring, error) {
	var p uringParams
	p.flags = uringSetupSubmitAll | uringSetupCoopTask
	fd, _, errno := syscall.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &ring{fd: int(fd), entries: p.sqEntries}
	if p.features&uringFeatSingleMmap == 0 {
		r.close()
		return nil, errors.New("io_uring: kernel without single-mmap rings")
	}
	size := max(p.sqOff.array+p.sqEntries*4, p.cqOff.cqes+p.cqEntries*uringCQESize)
	var err error
	r.mem, err = unix.Mmap(r.fd, uringOffSQRing, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		r.close()
		return nil, fmt.Errorf("io_uring rings: %w", err)
	}
	r.sqeMem, err = unix.Mmap(r.fd, uringOffSQEs, int(p.sqEntries*uringSQESize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		r.close()
		return nil, fmt.Errorf("io_uring entries: %w", err)
	}
	base := unsafe.Pointer(&r.mem[0])
	r.sqHead = (*uint32)(unsafe.Add(base, p.sqOff.head))
	r.sqTail = (*uint32)(unsafe.Add(base, p.sqOff.tail))
	r.sqMask = *(*uint32)(unsafe.Add(base, p.sqOff.ringMask))
	r.sqArray = unsafe.Slice((*uint32)(unsafe.Add(base, p.sqOff.array)), p.sqEntries)
	r.cqHead = (*uint32)(unsafe.Add(base, p.cqOff.head))
	r.cqTail = (*uint32)(unsafe.Add(base, p.cqOff.tail))
	r.cqMask = *(*uint32)(unsafe.Add(base, p.cqOff.ringMask))
	r.cqes = unsafe.Slice((*uringCQE)(unsafe.Add(base, p.cqOff.cqes)), p.cqEntries)
	r.sqes = unsafe.Slice((*uringSQE)(unsafe.Pointer(&r.sqeMem[0])), p.sqEntries)
	return r, nil
}

// close releases the ring. Entries queued but never entered are dropped
// with it, so nothing is sent after close returns.
func (r *ring) close() {
	if r.sqeMem != nil {
		_ = unix.Munmap(r.sqeMem)
		r.sqeMem = nil
	}
	if r.mem != nil {
		_ = unix.Munmap(r.mem)
		r.mem = nil
	}
	if r.fd >= 0 {
		_ = unix.Close(r.fd)
		r.fd = -1
	}
}

// send sends bufs[i] on socket fds[i], every send non-blocking
// (MSG_DONTWAIT: a full socket buffer is a short count or -EAGAIN, never a
// wait), and stores in res[i] the bytes sent or a negative errno. It waits
// for every send it submitted. An error means the ring is unusable; a send
// whose outcome is then unknown has res[i] == uringResultUnknown (it may or
// may not have gone out) and the caller must not retry it.
func (r *ring) send(fds []int32, bufs [][]byte, res []int32) error {
	for i := range res {
		res[i] = uringResultUnknown
	}
	for base := 0; base < len(fds); {
		n := min(len(fds)-base, int(r.entries))
		tail := atomic.LoadUint32(r.sqTail)
		for i := 0; i < n; i++ {
			idx := (tail + uint32(i)) & r.sqMask
			b := bufs[base+i]
			r.sqes[idx] = uringSQE{
				opcode:   uringOpSend,
				fd:       fds[base+i],
				addr:     uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b)))),
				len:      uint32(len(b)),
				msgFlags: unix.MSG_DONTWAIT | unix.MSG_NOSIGNAL,
				userData: uint64(base + i),
			}
			r.sqArray[idx] = idx
		}
		atomic.StoreUint32(r.sqTail, tail+uint32(n))
		submitted, err := r.enter(uint32(n), uint32(n))
		if err != nil || submitted != n {
			// With SUBMIT_ALL the kernel takes every entry or, on a
			// failure of the call itself, none; entries it did not take
			// stay queued and would go out on a later enter, so the ring
			// must not be used again.
			if err == nil {
				err = fmt.Errorf("io_uring_enter submitted %d of %d", submitted, n)
			}
			r.reap(res)
			return err
		}
		for got := r.reap(res); got < n; {
			// The wait ends early when a signal (the Go scheduler's
			// preemption) interrupts it; the sends are in flight.
			if _, err := r.enter(0, uint32(n-got)); err != nil {
				return err
			}
			got += r.reap(res)
		}
		base += n
	}
	// The kernel read the buffers through addresses it was given as
	// integers; they had to stay reachable until every send completed.
	runtime.KeepAlive(bufs)
	return nil
}

// enter calls io_uring_enter, retrying a call interrupted before it
// submitted anything.
func (r *ring) enter(toSubmit, minComplete uint32) (int, error) {
	for {
		n, _, errno := syscall.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(toSubmit), uintptr(minComplete), uringEnterGetEvents, 0, 0)
		switch errno {
		case 0:
			return int(n), nil
		case syscall.EINTR:
			if toSubmit == 0 {
				return 0, nil
			}
			continue
		default:
			return 0, fmt.Errorf("io_uring_enter: %w", errno)
		}
	}
}

// reap moves the completions in the queue into res and returns how many.
func (r *ring) reap(res []int32) int {
	head := atomic.LoadUint32(r.cqHead)
	tail := atomic.LoadUint32(r.cqTail)
	n := 0
	for ; head != tail; head++ {
		c := &r.cqes[head&r.cqMask]
		if i := c.userData; i < uint64(len(res)) {
			res[i] = c.res
		}
		n++
	}
	atomic.StoreUint32(r.cqHead, head)
	return n
}
