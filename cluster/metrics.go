package cluster

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"jim/dispatch"
)

// metrics are always counted and registered only with a Registerer, so
// several nodes can live in one test process.
type metrics struct {
	pub, recv               [4]prometheus.Counter // by dispatch.ClusterKind; 0 is "unknown"
	presenceOut, presenceIn prometheus.Counter
	pubErr, badFrames, slow prometheus.Counter
	undelivered             prometheus.Counter
	syncs                   prometheus.Counter
	presenceLag             prometheus.Counter
	presenceSilent          prometheus.Counter
	entries, nodes          prometheus.Collector
	vecs                    []prometheus.Collector
}

func newMetrics() *metrics {
	pub := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jim_cluster_published_total", Help: "Messages published to other nodes, by kind (user, group, kick, presence).",
	}, []string{"kind"})
	recv := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jim_cluster_received_total", Help: "Messages received from other nodes, by kind (user, group, kick, presence).",
	}, []string{"kind"})
	m := &metrics{
		presenceOut: pub.WithLabelValues("presence"),
		presenceIn:  recv.WithLabelValues("presence"),
		pubErr: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jim_cluster_publish_errors_total", Help: "Publishes refused by the NATS connection (closed, or its reconnect buffer full).",
		}),
		badFrames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jim_cluster_bad_frames_total", Help: "Routed messages that could not be decoded.",
		}),
		undelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jim_cluster_undelivered_total", Help: "Private chats routed to a node that no longer listened, queued offline instead.",
		}),
		syncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jim_cluster_presence_syncs_total", Help: "Presence snapshots asked of other nodes (one per node seen, more after a missed update or a restart).",
		}),
		presenceLag: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jim_cluster_presence_lagging_total", Help: "Liveness sweeps skipped because this node's own presence heartbeat came back late (its inbound is behind, so others' silence proves nothing).",
		}),
		presenceSilent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jim_cluster_presence_silent_total", Help: "Times another node went silent past 3/4 PresenceTTL (its users look offline until it speaks again; it is forgotten after 4 more TTLs).",
		}),
		slow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jim_cluster_slow_consumer_total", Help: "Times NATS dropped messages for this node because it fell behind.",
		}),
	}
	for k := range m.pub {
		name := dispatch.ClusterKind(k).String()
		m.pub[k] = pub.WithLabelValues(name)
		m.recv[k] = recv.WithLabelValues(name)
	}
	m.vecs = []prometheus.Collector{pub, recv, m.pubErr, m.badFrames, m.slow, m.undelivered, m.syncs, m.presenceLag, m.presenceSilent}
	return m
}

func (m *metrics) published(k dispatch.ClusterKind) prometheus.Counter {
	if int(k) < len(m.pub) {
		return m.pub[k]
	}
	return m.pub[0]
}

func (m *metrics) received(k dispatch.ClusterKind) prometheus.Counter {
	if int(k) < len(m.recv) {
		return m.recv[k]
	}
	return m.recv[0]
}

func (m *metrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range append(m.vecs, m.entries, m.nodes) {
		if err := r.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
