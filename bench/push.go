package bench

import (
	"context"
	"strconv"
	"sync"
	"time"
)

// pushWorkers bounds the HTTP requests in flight per process. The API is
// request/response, so throughput is workers / latency; 64 keeps a local
// server busy without opening hundreds of extra sockets.
const pushWorkers = 64

// startPush posts chats to /api/message/send at this process's share of the
// rate, addressed round-robin to the logged-in users, whose connections then
// count the deliveries.
func (r *runner) startPush(ctx context.Context, wg *sync.WaitGroup) {
	cfg := r.cfg
	var targets []*client
	for _, c := range r.clients {
		if c.state.Load() == stReady {
			targets = append(targets, c)
		}
	}
	if len(targets) == 0 {
		r.fail("no push targets connected", nil)
		return
	}
	jobs := make(chan *client, pushWorkers)
	var inner sync.WaitGroup
	for range pushWorkers {
		inner.Go(func() {
			var body []byte
			conns := map[string]*postConn{}
			defer func() {
				for _, pc := range conns {
					pc.close()
				}
			}()
			for c := range jobs {
				pc := conns[c.addr]
				if pc == nil {
					pc = &postConn{addr: c.addr, timeout: 10 * time.Second}
					conns[c.addr] = pc
				}
				body = r.pushOne(pc, c, body)
			}
		})
	}
	wg.Go(func() {
		next := 0
		pace(ctx, cfg.share(cfg.Rate), func() {
			c := targets[next]
			next = (next + 1) % len(targets)
			select {
			case jobs <- c:
			case <-ctx.Done():
			}
		})
		close(jobs)
		inner.Wait()
	})
}

func (r *runner) pushOne(pc *postConn, c *client, body []byte) []byte {
	now := time.Now().UnixNano()
	body = append(body[:0], `{"from":"`+r.cfg.UserPrefix+`-push","to":"`+c.user+`","chatType":2,"msgType":0,"content":"t=`...)
	body = append(strconv.AppendInt(body, now, 10), '"', '}')
	var headers []string
	if r.cfg.APIKey != "" {
		headers = []string{"X-API-Key", r.cfg.APIKey}
	}
	counted := now >= r.measureStart.Load()
	if counted {
		r.sent.Add(1)
	}
	code, rb, err := pc.post("/api/message/send", body, headers...)
	if err != nil {
		r.fail("push http", err)
		return body
	}
	if code != 200 {
		r.fail("push http "+strconv.Itoa(code), nil)
		return body
	}
	if !counted {
		return body
	}
	switch code, _ := jsonInt(rb, `"code":`); code {
	case statusOK:
		r.acked.Add(1)
	case statusOffline:
		r.offline.Add(1)
	default:
		r.fail("push status "+strconv.FormatInt(code, 10), nil)
	}
	return body
}
