package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// postConn is one keep-alive HTTP/1.1 connection that posts JSON and reads
// the reply: a request is one write, its response usually one read.
// net/http's client cost jimbench more CPU per request than the server
// spent answering it (a full core at 16,000 pushes a second, with the server
// at three quarters of one), which made the push scenario measure jimbench.
// It speaks only what the push scenario needs: responses must carry a
// Content-Length, as jim's do.
type postConn struct {
	addr    string
	timeout time.Duration
	c       net.Conn
	br      *bufio.Reader
	req     []byte
	resp    []byte
}

// maxPostResp bounds the response body postConn accepts.
const maxPostResp = 64 << 10

var errNoLength = errors.New("response without Content-Length")

// post sends body to path with headers (name, value pairs) and returns the
// status code and response body, valid until the next call. After an error
// the connection is closed and the next call dials again.
func (p *postConn) post(path string, body []byte, headers ...string) (int, []byte, error) {
	code, rb, err := p.do(path, body, headers)
	if err != nil {
		p.close()
	}
	return code, rb, err
}

func (p *postConn) do(path string, body []byte, headers []string) (int, []byte, error) {
	if p.c == nil {
		c, err := net.DialTimeout("tcp", p.addr, p.timeout)
		if err != nil {
			return 0, nil, err
		}
		p.c, p.br = c, bufio.NewReaderSize(c, 4096)
	}
	q := append(p.req[:0], "POST "...)
	q = append(q, path...)
	q = append(q, " HTTP/1.1\r\nHost: "...)
	q = append(q, p.addr...)
	q = append(q, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	q = strconv.AppendInt(q, int64(len(body)), 10)
	q = append(q, "\r\n"...)
	for i := 0; i+1 < len(headers); i += 2 {
		q = append(append(append(append(q, headers[i]...), ": "...), headers[i+1]...), "\r\n"...)
	}
	q = append(append(q, "\r\n"...), body...)
	p.req = q
	if err := p.c.SetDeadline(time.Now().Add(p.timeout)); err != nil {
		return 0, nil, err
	}
	if _, err := p.c.Write(q); err != nil {
		return 0, nil, err
	}
	line, err := p.br.ReadSlice('\n')
	if err != nil {
		return 0, nil, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, nil, fmt.Errorf("bad status line %q", line)
	}
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, fmt.Errorf("bad status line %q", line)
	}
	n, keep := -1, true
	for {
		h, err := p.br.ReadSlice('\n')
		if err != nil {
			return 0, nil, err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return 0, nil, fmt.Errorf("bad header %q", h)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if n, err = strconv.Atoi(string(value)); err != nil || n < 0 || n > maxPostResp {
				return 0, nil, fmt.Errorf("bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Connection")):
			keep = !bytes.EqualFold(value, []byte("close"))
		}
	}
	if n < 0 {
		return 0, nil, errNoLength
	}
	if cap(p.resp) < n {
		p.resp = make([]byte, n)
	}
	p.resp = p.resp[:n]
	if _, err := io.ReadFull(p.br, p.resp); err != nil {
		return 0, nil, err
	}
	if !keep {
		p.close()
	}
	return code, p.resp, nil
}

func (p *postConn) close() {
	if p.c != nil {
		p.c.Close()
		p.c, p.br = nil, nil
	}
}
