package jimtest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"jim/codec"
)

// ReadFrame reads one J-IM TCP frame from the server and returns its command
// and body. Frames over 16 MiB are refused.
func ReadFrame(br *bufio.Reader) (codec.Cmd, []byte, error) {
	var hdr [7]byte
	if _, err := io.ReadFull(br, hdr[:2]); err != nil {
		return 0, nil, err
	}
	if hdr[0] != 0x01 {
		return 0, nil, fmt.Errorf("version byte %#x", hdr[0])
	}
	if hdr[1]&0x20 != 0 {
		if _, err := io.ReadFull(br, make([]byte, 4)); err != nil {
			return 0, nil, err
		}
	}
	if _, err := io.ReadFull(br, hdr[2:7]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[3:7])
	if n > 16<<20 {
		return 0, nil, errors.New("frame too large")
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return 0, nil, err
	}
	return codec.Cmd(int8(hdr[2])), body, nil
}
