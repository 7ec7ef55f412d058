// Package bench is jim's load generator: it opens many client connections
// (TCP or WebSocket) to one or more gateways, logs them in, drives one of the
// idle, chat, group or push scenarios and measures delivery counts, latency
// and the server's memory and CPU cost.
//
// Connections live on cloudwego/netpoll event loops rather than one goroutine
// each, so a single process can hold tens of thousands of them while its own
// footprint stays small next to the server it measures. Beyond one process's
// file limit the command splits the work over worker processes (see
// RunParent and RunWorker) and merges their results.
//
// Receivers parse only frame boundaries, the command, the status code and the
// send timestamp that every benchmark message carries in its content as
// "t=<unix nanoseconds>"; latency is arrival time minus that timestamp.
// Besides the run's percentiles and histogram, the result has a timeline:
// the latency of the messages sent in each second of the run, so a tail
// can be told apart as one stalled second or a steady spread.
package bench
