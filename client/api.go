package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"time"

	"jim/codec"
)

// withCmd encodes v as a JSON object with "cmd" first. jim's WebSocket side
// routes on that field, and the codec's request types do not carry it.
func withCmd(cmd codec.Cmd, v any) ([]byte, error) {
	b, err := codec.Marshal(v)
	if err != nil {
		return nil, err
	}
	head := fmt.Appendf(nil, `{"cmd":%d`, cmd)
	if len(b) <= 2 { // "{}"
		return append(head, '}'), nil
	}
	return append(append(head, ','), b[1:]...), nil
}

func refused(r *reply) error {
	return &Error{Cmd: r.Command, Code: r.Code, Msg: r.Msg}
}

// Login logs in (cmd 5) and returns the user as the server describes it,
// including the groups the user is a member of. The credentials are kept and
// used again after every reconnect. A refused login is an *Error with code
// 10008; jim then closes the connection, so a client without reconnecting
// becomes unusable.
func (c *Client) Login(ctx context.Context, userID, password, token string) (*codec.User, error) {
	req := codec.LoginReq{UserID: userID, Password: password, Token: token}
	cn, err := c.waitConn(ctx)
	if err != nil {
		return nil, err
	}
	return c.loginOn(ctx, cn, req)
}

func (c *Client) loginOn(ctx context.Context, cn *conn, req codec.LoginReq) (*codec.User, error) {
	body, err := withCmd(codec.CmdLoginReq, &req)
	if err != nil {
		return nil, err
	}
	r, err := c.roundTripOn(ctx, cn, codec.CmdLoginReq, codec.CmdLoginResp, "", body)
	if err != nil {
		return nil, err
	}
	if r.Code != codec.StatusLoginOK {
		return nil, refused(r)
	}
	u := r.User
	if u == nil {
		u = &codec.User{UserID: req.User()}
	}
	c.mu.Lock()
	c.me = u.UserID
	c.creds = &req
	for _, g := range u.Groups {
		if g != nil {
			c.groups[g.GroupID] = struct{}{}
		}
	}
	c.mu.Unlock()
	return u, nil
}

// Ack is the server's answer to a chat (cmd 12).
type Ack struct {
	// ID is the server's message id; Seq numbers the message in its
	// conversation.
	ID  string
	Seq uint64
	// ClientID is the client message id the chat was sent with.
	ClientID string
	// Code is 10000, or 10001 for a private chat whose receiver is offline:
	// the message is then stored and queued for the receiver, not lost.
	Code codec.Status
	// Offline reports Code 10001.
	Offline bool
}

// SendOption adjusts an outgoing chat.
type SendOption func(*codec.ChatBody)

// WithMsgType sets J-IM's message type (0 text, 1 image, 2 voice, ...).
func WithMsgType(t int) SendOption {
	return func(b *codec.ChatBody) { b.MsgType = codec.FlexInt(t) }
}

// WithExtras attaches a JSON object that the server stores and forwards
// unchanged.
func WithExtras(extras json.RawMessage) SendOption {
	return func(b *codec.ChatBody) { b.Extras = extras }
}

// WithClientID replaces the random client message id. Sending twice with the
// same id stores and delivers the message once; both calls get its Ack.
func WithClientID(id string) SendOption {
	return func(b *codec.ChatBody) { b.ID = id }
}

// newID returns 32 hex digits, the shape of jim's own ids.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Send sends a private chat to user to and waits for the server's Ack. A
// receiver being offline is not an error: see Ack.Offline. If the
// connection drops before the Ack arrives, the chat is sent again on the
// next connection with the same client id, which the server de-duplicates.
func (c *Client) Send(ctx context.Context, to, content string, opts ...SendOption) (Ack, error) {
	b := codec.ChatBody{ChatType: codec.ChatTypePrivate, To: to, Content: content}
	ack, err := c.sendChat(ctx, &b, opts)
	if err == nil {
		// Our own messages take seqs in the private conversation but are
		// never pushed back to us; note them so resume sees no gap.
		c.track.markOwn(convKeyPrivate(to), ack.Seq)
	}
	return ack, err
}

// SendGroup sends a chat to a group the user is a member of and waits for
// the Ack. jim echoes group chats to the sender too, so the message is also
// delivered to this client. A non-member gets an *Error with code 10102.
func (c *Client) SendGroup(ctx context.Context, groupID, content string, opts ...SendOption) (Ack, error) {
	b := codec.ChatBody{ChatType: codec.ChatTypeGroup, GroupID: groupID, Content: content}
	return c.sendChat(ctx, &b, opts)
}

func (c *Client) sendChat(ctx context.Context, b *codec.ChatBody, opts []SendOption) (Ack, error) {
	b.Cmd = codec.FlexInt(codec.CmdChatReq)
	b.ID = newID()
	for _, o := range opts {
		o(b)
	}
	body, err := codec.Marshal(b)
	if err != nil {
		return Ack{}, err
	}
	r, err := c.roundTrip(ctx, codec.CmdChatReq, codec.CmdChatResp, "", body)
	if err != nil {
		return Ack{}, err
	}
	if r.Code != codec.StatusOK && r.Code != codec.StatusOffline {
		return Ack{}, refused(r)
	}
	var d codec.ChatAck
	if len(r.Data) > 0 {
		if err := codec.Unmarshal(r.Data, &d); err != nil {
			return Ack{}, err
		}
	}
	return Ack{ID: d.ID, Seq: d.Seq, ClientID: b.ID, Code: r.Code, Offline: r.Code == codec.StatusOffline}, nil
}

// Join joins a group (cmd 7). jim has no direct reply on success: Join
// returns when the server's join notice (cmd 9) for this user and group
// arrives, or an *Error on a refusal (cmd 8, code 10012). Membership is
// durable on the server and the group is joined again after a reconnect.
func (c *Client) Join(ctx context.Context, groupID string) error {
	if groupID == "" {
		// jim closes the connection on a blank group id.
		return fmt.Errorf("client: empty group id")
	}
	for {
		cn, err := c.waitConn(ctx)
		if err != nil {
			return err
		}
		err = c.joinOn(ctx, cn, groupID)
		if err == errConnLost {
			continue
		}
		return err
	}
}

func (c *Client) joinOn(ctx context.Context, cn *conn, groupID string) error {
	body, err := withCmd(codec.CmdJoinGroupReq, &codec.GroupReq{GroupID: groupID})
	if err != nil {
		return err
	}
	r, err := c.roundTripOn(ctx, cn, codec.CmdJoinGroupReq, 0, groupID, body)
	if err != nil {
		return err
	}
	if r.Command == codec.CmdJoinGroupResp || r.Code != codec.StatusJoinGroupOK {
		return refused(r)
	}
	c.mu.Lock()
	c.groups[groupID] = struct{}{}
	c.mu.Unlock()
	return nil
}

// Leave leaves a group for good (jim's cmd 21). It is idempotent.
func (c *Client) Leave(ctx context.Context, groupID string) error {
	body, err := withCmd(codec.CmdExitGroupReq, &codec.GroupReq{GroupID: groupID})
	if err != nil {
		return err
	}
	r, err := c.roundTrip(ctx, codec.CmdExitGroupReq, codec.CmdExitGroupReq, "", body)
	if err != nil {
		return err
	}
	if r.Code != codec.StatusLeaveGroupOK {
		return refused(r)
	}
	c.mu.Lock()
	delete(c.groups, groupID)
	c.mu.Unlock()
	return nil
}

// Groups returns the groups this client joins again after a reconnect: those
// listed at login, joined, and not left.
func (c *Client) Groups() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	gs := make([]string, 0, len(c.groups))
	for g := range c.groups {
		gs = append(gs, g)
	}
	slices.Sort(gs)
	return gs
}

// HistoryQuery selects stored messages of one conversation: Peer for a
// private conversation with that user, or Group. Zero fields are left out
// of the request and take the server's defaults: without Offset, Count and
// AfterSeq jim returns the latest 100 messages.
type HistoryQuery struct {
	Peer  string
	Group string
	// Begin and End bound the messages' createTime, inclusive.
	Begin, End time.Time
	// Offset skips that many messages from the oldest; Count caps the page
	// (jim: default 100, max 1000).
	Offset, Count int
	// AfterSeq keeps only messages with a greater seq (jim's resume).
	AfterSeq uint64
}

// History returns stored messages of a conversation, oldest first (cmd 19,
// type 1). Group history needs membership.
func (c *Client) History(ctx context.Context, q HistoryQuery) ([]codec.ChatBody, error) {
	if (q.Peer == "") == (q.Group == "") {
		return nil, fmt.Errorf("client: history needs exactly one of Peer and Group")
	}
	me := c.userID()
	if me == "" {
		return nil, ErrNotLoggedIn
	}
	typ := codec.FlexInt(codec.MessageTypeHistory)
	req := codec.MessageReq{Type: &typ, UserID: me, FromUserID: q.Peer, GroupID: q.Group,
		Offset: codec.FlexInt(q.Offset), Count: codec.FlexInt(q.Count)}
	if !q.Begin.IsZero() {
		req.BeginTime = codec.FlexInt(q.Begin.UnixMilli())
	}
	if !q.End.IsZero() {
		req.EndTime = codec.FlexInt(q.End.UnixMilli())
	}
	if q.AfterSeq > 0 {
		a := codec.FlexInt(q.AfterSeq)
		req.AfterSeq = &a
	}
	d, err := c.getMessages(ctx, nil, &req, codec.StatusGetHistoryMsgOK)
	if err != nil {
		return nil, err
	}
	if q.Group != "" {
		return flatten(d.Groups[q.Group]), nil
	}
	return flatten(d.Friends[q.Peer]), nil
}

// OfflineQuery selects queued offline messages: those from Peer, those of
// Group, or (both empty) everything queued for the user.
type OfflineQuery struct {
	Peer  string
	Group string
}

// Offline fetches the messages queued while the user was offline (cmd 19,
// type 0). The server removes them from the queue once it has sent the
// reply, so each is returned once; a reply is bounded (in count and in
// bytes), so Offline asks again until the queue is empty. They are ordered
// by createTime, then by seq within their conversation. The messages count
// as delivered: a later resume does not deliver them again. When a later
// page fails, the messages of the earlier ones (gone from the server's
// queue) are returned with the error.
func (c *Client) Offline(ctx context.Context, q OfflineQuery) ([]codec.ChatBody, error) {
	msgs, err := c.offlineOn(ctx, nil, q)
	me := c.userID()
	for i := range msgs {
		c.track.markNew(me, &msgs[i])
	}
	return msgs, err
}

func (c *Client) offlineOn(ctx context.Context, cn *conn, q OfflineQuery) ([]codec.ChatBody, error) {
	me := c.userID()
	if me == "" {
		return nil, ErrNotLoggedIn
	}
	typ := codec.FlexInt(codec.MessageTypeOffline)
	req := codec.MessageReq{Type: &typ, UserID: me, FromUserID: q.Peer, GroupID: q.Group}
	var out []codec.ChatBody
	seen := map[string]bool{}
	var err error
	for range maxOfflinePages {
		var d *codec.MessageData
		if d, err = c.getMessages(ctx, cn, &req, codec.StatusGetOfflineMsgOK); err != nil {
			break
		}
		// A page with nothing new ends it: the queue is empty, or a
		// server that did not drop what it sent would repeat it for ever.
		fresh := 0
		for _, ls := range []map[string][]*codec.ChatBody{d.Groups, d.Friends} {
			for _, l := range ls {
				for _, m := range flatten(l) {
					if m.ID != "" && seen[m.ID] {
						continue
					}
					seen[m.ID] = true
					out = append(out, m)
					fresh++
				}
			}
		}
		if fresh == 0 {
			break
		}
	}
	if err != nil && len(out) == 0 {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := &out[i], &out[j]
		if ka, kb := convKey(me, a), convKey(me, b); ka == kb {
			return a.Seq < b.Seq
		}
		if a.CreateTime != b.CreateTime {
			return a.CreateTime < b.CreateTime
		}
		return convKey(me, a) < convKey(me, b)
	})
	return out, err
}

// maxOfflinePages bounds the fetches of one Offline call: 1,000 pages of up
// to 1,000 messages each.
const maxOfflinePages = 1000

// getMessages runs one cmd-19 request, on cn if given (no retry) or on the
// current connection.
func (c *Client) getMessages(ctx context.Context, cn *conn, req *codec.MessageReq, ok codec.Status) (*codec.MessageData, error) {
	body, err := withCmd(codec.CmdGetMessageReq, req)
	if err != nil {
		return nil, err
	}
	var r *reply
	if cn != nil {
		r, err = c.roundTripOn(ctx, cn, codec.CmdGetMessageReq, codec.CmdGetMessageResp, "", body)
	} else {
		r, err = c.roundTrip(ctx, codec.CmdGetMessageReq, codec.CmdGetMessageResp, "", body)
	}
	if err != nil {
		return nil, err
	}
	if r.Code != ok {
		return nil, refused(r)
	}
	var d codec.MessageData
	if len(r.Data) > 0 {
		if err := codec.Unmarshal(r.Data, &d); err != nil {
			return nil, err
		}
	}
	return &d, nil
}

func flatten(l []*codec.ChatBody) []codec.ChatBody {
	out := make([]codec.ChatBody, 0, len(l))
	for _, m := range l {
		if m != nil {
			out = append(out, *m)
		}
	}
	return out
}

// GetUser looks a user up (cmd 17): presence, terminal and groups with
// their members. typ picks the members listed: codec.UserTypeOnline (0),
// codec.UserTypeOffline (1) or codec.UserTypeAll (2).
func (c *Client) GetUser(ctx context.Context, userID string, typ int) (*codec.User, error) {
	t := codec.FlexInt(typ)
	body, err := withCmd(codec.CmdGetUserReq, &codec.UserReq{UserID: userID, Type: &t})
	if err != nil {
		return nil, err
	}
	r, err := c.roundTrip(ctx, codec.CmdGetUserReq, codec.CmdGetUserResp, "", body)
	if err != nil {
		return nil, err
	}
	switch r.Code {
	case codec.StatusGetUserOK, codec.StatusGetOnlineUsersOK, codec.StatusGetOfflineUsersOK:
	default:
		return nil, refused(r)
	}
	var u codec.User
	if err := codec.Unmarshal(r.Data, &u); err != nil {
		return nil, err
	}
	return &u, nil
}
