package dispatch

import (
	"sync"
	"sync/atomic"
)

// pool is a fixed set of workers, each with its own bounded queue. A job is
// keyed (by connection id), and a key always maps to the same worker, which
// is what keeps one connection's packets in order without a lock per
// connection.
type pool struct {
	queues  []chan func()
	quit    chan struct{}
	wg      sync.WaitGroup
	stopped atomic.Bool
	stopMu  sync.Once
}

func newPool(workers, queueLen int) *pool {
	p := &pool{queues: make([]chan func(), workers), quit: make(chan struct{})}
	for i := range p.queues {
		q := make(chan func(), queueLen)
		p.queues[i] = q
		p.wg.Add(1)
		go p.work(q)
	}
	return p
}

func (p *pool) work(q chan func()) {
	defer p.wg.Done()
	for {
		select {
		case f := <-q:
			f()
		case <-p.quit:
			// Drain what was accepted before the stop: accepted work is
			// acknowledged work (a chat may already be stored).
			for {
				select {
				case f := <-q:
					f()
				default:
					return
				}
			}
		}
	}
}

func (p *pool) queue(key uint64) chan func() { return p.queues[key%uint64(len(p.queues))] }

// trySubmit queues f on key's worker without blocking. It returns false if
// the queue is full or the pool stopped: back-pressure for the caller to
// report, never an unbounded queue.
func (p *pool) trySubmit(key uint64, f func()) bool {
	if p.stopped.Load() {
		return false
	}
	select {
	case p.queue(key) <- f:
		return true
	default:
		return false
	}
}

// mustSubmit queues f on key's worker even if the queue is full, without
// blocking the caller: the overflow waits in a goroutine of its own. It is
// only for work that must not be lost and arrives at most once per
// connection (its close), so the goroutines are bounded by the connections
// closing during an overload. Jobs that key submitted earlier are already in
// the queue, so f still runs after them. After stop, f runs on the caller.
func (p *pool) mustSubmit(key uint64, f func()) {
	if p.trySubmit(key, f) {
		return
	}
	if p.stopped.Load() {
		f()
		return
	}
	q := p.queue(key)
	go func() {
		select {
		case q <- f:
		case <-p.quit:
			f()
		}
	}()
}

// stop makes workers finish the queued jobs and exit, and waits for them.
func (p *pool) stop() {
	p.stopMu.Do(func() {
		p.stopped.Store(true)
		close(p.quit)
	})
	p.wg.Wait()
	// A submit that raced with the stop may have queued after its worker
	// drained; run it here rather than lose it.
	for _, q := range p.queues {
		for drained := false; !drained; {
			select {
			case f := <-q:
				f()
			default:
				drained = true
			}
		}
	}
}

// barrier waits until every job queued before it on every worker has run.
func (p *pool) barrier() {
	var wg sync.WaitGroup
	for _, q := range p.queues {
		wg.Add(1)
		q <- wg.Done
	}
	wg.Wait()
}
