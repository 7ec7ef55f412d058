package gateway

import (
	"sync"
	"sync/atomic"
)

// wheelSlots is the number of one-second slots. A deadline further out than
// that is parked in the last slot and looked at again when it comes round, so
// any timeout works; 256 covers the defaults (10 s login, 120 s idle) in one
// turn.
const wheelSlots = 256

// wheel is a coarse timing wheel for idle and login deadlines. Activity costs
// one atomic store on the connection (lastActive); the wheel only visits a
// connection when its slot comes up, then closes it or moves it to the slot of
// its new deadline. No per-connection timer exists anywhere.
type wheel struct {
	now   atomic.Int64 // the wheel clock in seconds, advanced by tick
	mu    sync.Mutex
	slots [wheelSlots][]*conn
}

// add schedules c to be looked at when deadline (wheel seconds) is reached.
func (w *wheel) add(c *conn, deadline int64) {
	w.mu.Lock()
	w.addLocked(c, deadline)
	w.mu.Unlock()
}

func (w *wheel) addLocked(c *conn, deadline int64) {
	now := w.now.Load()
	if deadline <= now {
		deadline = now + 1
	}
	if deadline-now >= wheelSlots {
		deadline = now + wheelSlots - 1
	}
	i := deadline % wheelSlots
	w.slots[i] = append(w.slots[i], c)
}

// tick advances the clock by one second and returns the connections in the
// slot now due; the caller decides for each whether it expired (and calls
// add again for the ones that did not). The slot's array is handed over, so
// the caller owns the slice.
func (w *wheel) tick() (now int64, due []*conn) {
	w.mu.Lock()
	now = w.now.Add(1)
	i := now % wheelSlots
	due = w.slots[i]
	w.slots[i] = nil
	w.mu.Unlock()
	return now, due
}
