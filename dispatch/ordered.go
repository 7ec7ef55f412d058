package dispatch

import "sync"

// ordered runs jobs on a fixed set of goroutines, one queue each, with a key
// always on the same queue. It is where durable chats are finished (acked and
// delivered): the store reports appends in seq order, and keying by
// conversation keeps that order all the way to the receivers' sockets.
//
// submit never blocks, because it is called from the store's goroutine and a
// blocked store would stall every conversation. The queues are still
// bounded: every job is one message the store accepted, and the store's own
// input is bounded, so at most that many jobs are ever waiting.
type ordered struct {
	qs []*orderedQueue
	wg sync.WaitGroup
}

type orderedQueue struct {
	mu     sync.Mutex
	jobs   []func()
	wake   chan struct{}
	closed bool
}

func newOrdered(workers int) *ordered {
	o := &ordered{qs: make([]*orderedQueue, workers)}
	for i := range o.qs {
		q := &orderedQueue{wake: make(chan struct{}, 1)}
		o.qs[i] = q
		o.wg.Add(1)
		go o.run(q)
	}
	return o
}

func (o *ordered) submit(key string, f func()) {
	q := o.qs[shard(key)%uint32(len(o.qs))]
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		f() // after stop: run inline rather than lose an acked message
		return
	}
	q.jobs = append(q.jobs, f)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (o *ordered) run(q *orderedQueue) {
	defer o.wg.Done()
	var batch []func()
	for {
		q.mu.Lock()
		batch, q.jobs = q.jobs, batch[:0]
		closed := q.closed
		q.mu.Unlock()
		for i, f := range batch {
			f()
			batch[i] = nil
		}
		if len(batch) == 0 {
			if closed {
				return
			}
			<-q.wake
		}
	}
}

// stop runs what is queued and ends the goroutines.
func (o *ordered) stop() {
	for _, q := range o.qs {
		q.mu.Lock()
		q.closed = true
		q.mu.Unlock()
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	o.wg.Wait()
}
