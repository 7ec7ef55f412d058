package dispatch

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"jim/codec"
)

// metrics are always counted; they are registered only when Options carries a
// Registerer, so several Dispatchers (tests) can coexist.
type metrics struct {
	loginOK, loginFailed, loginRefused prometheus.Counter
	in                                 [int(codec.CmdExitGroupReq) + 2]prometheus.Counter // known cmds, then "cmd_other"
	out                                prometheus.Counter
	deliveries                         prometheus.Counter
	fanout                             prometheus.Histogram
	storeAppend, chatAck               prometheus.Histogram
	queueFull                          prometheus.Counter
	sessions                           prometheus.GaugeFunc
	vecs                               []prometheus.Collector
}

func newMetrics(sessions func() float64) *metrics {
	logins := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jim_logins_total", Help: "Logins by result (ok, failed: bad credentials, refused: other user on a logged-in connection).",
	}, []string{"result"})
	in := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jim_messages_in_total", Help: "Packets received, by command.",
	}, []string{"cmd"})
	m := &metrics{
		loginOK:      logins.WithLabelValues("ok"),
		loginFailed:  logins.WithLabelValues("failed"),
		loginRefused: logins.WithLabelValues("refused"),
		out: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jim_messages_out_total", Help: "Messages queued on connections.",
		}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jim_deliveries_total", Help: "Chat messages queued on a receiving connection.",
		}),
		fanout: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "jim_fanout_seconds", Help: "Time to queue one chat message on all its receiving connections.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12),
		}),
		// Where a chat message's time goes inside the server: the durable
		// write alone, and the whole way from arrival to the sender's reply
		// (worker queue, write, delivery). A client-side latency far above
		// jim_chat_ack_seconds is spent in the sockets or the client.
		storeAppend: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "jim_store_append_seconds", Help: "Time from handing a chat message to the store to its being durable (group commit wait and sync).",
			Buckets: latencyBuckets,
		}),
		chatAck: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "jim_chat_ack_seconds", Help: "Time from a chat message's arrival at the dispatcher to its sender's reply being queued (worker queue, durable write, delivery).",
			Buckets: latencyBuckets,
		}),
		queueFull: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jim_worker_queue_full_total", Help: "Packets refused with a busy status because a worker queue was full.",
		}),
		sessions: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "jim_sessions", Help: "Logged-in connections.",
		}, sessions),
	}
	// Label values are resolved once: WithLabelValues per packet would hash
	// on the hot path.
	for i := range m.in {
		c := codec.Cmd(i)
		if i == len(m.in)-1 {
			c = -1
		}
		m.in[i] = in.WithLabelValues(c.String())
	}
	m.vecs = []prometheus.Collector{logins, in, m.out, m.deliveries, m.fanout, m.storeAppend, m.chatAck, m.queueFull, m.sessions}
	return m
}

// latencyBuckets span 100 µs to about 1.6 s, doubling: a durable write on
// a good disk takes a few hundred microseconds, a stalled one a second.
var latencyBuckets = prometheus.ExponentialBuckets(100e-6, 2, 15)

func (m *metrics) inCounter(c codec.Cmd) prometheus.Counter {
	if c.Known() {
		return m.in[c]
	}
	return m.in[len(m.in)-1]
}

func (m *metrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range m.vecs {
		if err := r.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
