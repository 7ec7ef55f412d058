package bench

import (
	"bytes"
	"context"
	"io"
	"net/http"
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
	tr := &http.Transport{
		MaxIdleConnsPerHost: pushWorkers,
		MaxConnsPerHost:     pushWorkers,
		IdleConnTimeout:     30 * time.Second,
	}
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	jobs := make(chan *client, pushWorkers)
	var inner sync.WaitGroup
	for range pushWorkers {
		inner.Go(func() {
			var body []byte
			for c := range jobs {
				body = r.pushOne(hc, c, body)
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
		tr.CloseIdleConnections()
	})
}

func (r *runner) pushOne(hc *http.Client, c *client, body []byte) []byte {
	now := time.Now().UnixNano()
	body = append(body[:0], `{"from":"`+r.cfg.UserPrefix+`-push","to":"`+c.user+`","chatType":2,"msgType":0,"content":"t=`...)
	body = append(strconv.AppendInt(body, now, 10), '"', '}')
	req, err := http.NewRequest(http.MethodPost, "http://"+c.addr+"/api/message/send", bytes.NewReader(body))
	if err != nil {
		r.fail("push request", err)
		return body
	}
	req.Header.Set("Content-Type", "application/json")
	if r.cfg.APIKey != "" {
		req.Header.Set("X-API-Key", r.cfg.APIKey)
	}
	counted := now >= r.measureStart.Load()
	if counted {
		r.sent.Add(1)
	}
	resp, err := hc.Do(req)
	if err != nil {
		r.fail("push http", err)
		return body
	}
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		r.fail("push http "+strconv.Itoa(resp.StatusCode), nil)
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
