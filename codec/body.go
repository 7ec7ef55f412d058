package codec

import (
	"encoding/json"
	"errors"
	"strconv"

	"github.com/bytedance/sonic"
	"github.com/bytedance/sonic/encoder"
)

// jsonAPI is the sonic configuration every body goes through. ValidateString
// makes the decoder refuse invalid UTF-8 inside strings (hostile input), and the
// encoder never escapes HTML, as fastjson does not either. Strings may alias the
// input: decoders in this package always hand out bodies they own.
var jsonAPI = sonic.Config{ValidateString: true}.Froze()

// ErrBadJSON is returned for a body that is not the JSON object expected.
var ErrBadJSON = errors.New("codec: malformed JSON body")

// Unmarshal decodes a JSON body into v with the project's sonic configuration.
func Unmarshal(b []byte, v any) error {
	if err := jsonAPI.Unmarshal(b, v); err != nil {
		return errors.Join(ErrBadJSON, err)
	}
	return nil
}

// Marshal encodes v as compact JSON with the project's sonic configuration.
func Marshal(v any) ([]byte, error) { return jsonAPI.Marshal(v) }

// FlexInt is an integer that J-IM clients may send as a JSON number or as a
// string ("chatType":"2"); fastjson accepted both, so jim does too. Floats are
// truncated (beginTime is a Double in J-IM). null and "" leave it zero. It
// encodes as a plain number.
type FlexInt int64

// UnmarshalJSON accepts 12, 12.0, "12", "", and null.
func (f *FlexInt) UnmarshalJSON(b []byte) error {
	if len(b) == 0 {
		return ErrBadJSON
	}
	if b[0] == 'n' { // null
		if string(b) != "null" {
			return ErrBadJSON
		}
		return nil
	}
	if b[0] == '"' {
		if len(b) < 2 || b[len(b)-1] != '"' {
			return ErrBadJSON
		}
		b = b[1 : len(b)-1]
		if len(b) == 0 {
			*f = 0
			return nil
		}
	}
	if n, err := strconv.ParseInt(string(b), 10, 64); err == nil {
		*f = FlexInt(n)
		return nil
	}
	x, err := strconv.ParseFloat(string(b), 64)
	if err != nil || x != x || x > 9.2e18 || x < -9.2e18 {
		return ErrBadJSON
	}
	*f = FlexInt(x)
	return nil
}

// Chat types (J-IM ChatType).
const (
	ChatTypeUnknown = 0
	ChatTypeGroup   = 1
	ChatTypePrivate = 2
)

// Header is the part of every request body that picks the handler: WebSocket
// frames carry the command only inside their JSON.
type Header struct {
	Cmd FlexInt `json:"cmd"`
}

// ChatBody is a chat message (cmd 11), both as the client sends it and as jim
// forwards it. Fields are in alphabetical order because J-IM's fastjson output
// is sorted and some clients compare raw text. Seq is jim's extension: the
// message's sequence number in its conversation.
type ChatBody struct {
	ChatType   FlexInt         `json:"chatType,omitempty"`
	Cmd        FlexInt         `json:"cmd,omitempty"`
	Content    string          `json:"content,omitempty"`
	CreateTime FlexInt         `json:"createTime,omitempty"`
	Extras     json.RawMessage `json:"extras,omitempty"`
	From       string          `json:"from,omitempty"`
	GroupID    string          `json:"groupId,omitempty"`
	ID         string          `json:"id,omitempty"`
	MsgType    FlexInt         `json:"msgType"`
	Seq        uint64          `json:"seq,omitempty"`
	To         string          `json:"to,omitempty"`

	// GroupIDLegacy is J-IM 2.x's name for groupId; it is folded into GroupID.
	GroupIDLegacy string `json:"group_id,omitempty"`
}

// Normalize folds legacy field names into the current ones.
func (c *ChatBody) Normalize() {
	if c.GroupID == "" && c.GroupIDLegacy != "" {
		c.GroupID = c.GroupIDLegacy
	}
	c.GroupIDLegacy = ""
}

// LoginReq is the login request (cmd 5). LoginName is J-IM 2.x's userId.
type LoginReq struct {
	LoginName string `json:"loginname,omitempty"`
	Password  string `json:"password,omitempty"`
	Token     string `json:"token,omitempty"`
	UserID    string `json:"userId,omitempty"`
}

// User returns the user id the request names, accepting the 2.x field name.
func (l *LoginReq) User() string {
	if l.UserID != "" {
		return l.UserID
	}
	return l.LoginName
}

// AuthReq is the auth request (cmd 3).
type AuthReq struct {
	Token string `json:"token"`
}

// GroupReq is the join-group request (cmd 7) and jim's leave-group request
// (cmd 21).
type GroupReq struct {
	GroupID       string `json:"groupId,omitempty"`
	GroupIDLegacy string `json:"group_id,omitempty"`
	Name          string `json:"name,omitempty"`
}

// ID returns the group id, accepting the 2.x field name.
func (g *GroupReq) ID() string {
	if g.GroupID != "" {
		return g.GroupID
	}
	return g.GroupIDLegacy
}

// CloseReq is the close request (cmd 14). UserIDLegacy is J-IM 2.x's name.
type CloseReq struct {
	UserID       string `json:"userId,omitempty"`
	UserIDLegacy string `json:"userid,omitempty"`
}

// User returns the user id named, accepting the 2.x field name.
func (c *CloseReq) User() string {
	if c.UserID != "" {
		return c.UserID
	}
	return c.UserIDLegacy
}

// User status query types (cmd 17 "type").
const (
	UserTypeOnline  = 0
	UserTypeOffline = 1
	UserTypeAll     = 2
)

// UserReq is the get-user request (cmd 17). Type is required; a nil Type is
// refused with 10004 rather than crashing as J-IM does.
type UserReq struct {
	FriendGroupID string   `json:"friendGroupId,omitempty"`
	GroupID       string   `json:"groupId,omitempty"`
	Type          *FlexInt `json:"type,omitempty"`
	UserID        string   `json:"userId,omitempty"`
}

// Message query types (cmd 19 "type").
const (
	MessageTypeOffline = 0
	MessageTypeHistory = 1
)

// MessageReq is the get-message request (cmd 19): offline messages (type 0) or
// history (type 1). AfterSeq is jim's resume extension: with a conversation
// (fromUserId or groupId) it returns the messages whose seq is greater.
type MessageReq struct {
	AfterSeq   *FlexInt `json:"afterSeq,omitempty"`
	BeginTime  FlexInt  `json:"beginTime,omitempty"`
	Count      FlexInt  `json:"count,omitempty"`
	EndTime    FlexInt  `json:"endTime,omitempty"`
	FromUserID string   `json:"fromUserId,omitempty"`
	GroupID    string   `json:"groupId,omitempty"`
	Offset     FlexInt  `json:"offset,omitempty"`
	Type       *FlexInt `json:"type,omitempty"`
	UserID     string   `json:"userId,omitempty"`
}

// User is J-IM's user object, as returned by get-user (cmd 18) and inside group
// notifications. Fields in alphabetical order.
type User struct {
	Avatar   string   `json:"avatar,omitempty"`
	Friends  []*Group `json:"friends,omitempty"`
	Groups   []*Group `json:"groups,omitempty"`
	Nick     string   `json:"nick,omitempty"`
	Sign     string   `json:"sign,omitempty"`
	Status   string   `json:"status,omitempty"`
	Terminal string   `json:"terminal,omitempty"`
	UserID   string   `json:"userId"`
}

// Group is J-IM's group object. Users is always written (the J-IM page reads
// group.users without a null check).
type Group struct {
	Avatar  string  `json:"avatar,omitempty"`
	GroupID string  `json:"groupId"`
	Name    string  `json:"name,omitempty"`
	Online  int     `json:"online"`
	Users   []*User `json:"users"`
}

// Resp is the generic reply: every server message is one of these. Command is
// always written (0 is the unknown-command reply); the rest are omitted when
// empty, as fastjson omits nulls.
type Resp struct {
	Code    Status `json:"code,omitempty"`
	Command Cmd    `json:"command"`
	Data    any    `json:"data,omitempty"`
	Msg     string `json:"msg,omitempty"`
}

// LoginResp is the login reply (cmd 6). J-IM 3.0 sends only code/command/msg;
// jim adds the user (with groups), which J-IM clients ignore.
type LoginResp struct {
	Code    Status `json:"code"`
	Command Cmd    `json:"command"`
	Msg     string `json:"msg"`
	Token   string `json:"token,omitempty"`
	User    *User  `json:"user,omitempty"`
}

// JoinGroupResp is the join-group rejection (cmd 8).
type JoinGroupResp struct {
	Code    Status `json:"code"`
	Command Cmd    `json:"command"`
	Data    any    `json:"data,omitempty"`
	Group   string `json:"group,omitempty"`
	Msg     string `json:"msg"`
	Result  int    `json:"result"`
}

// Join-group results (J-IM JoinGroupResult).
const (
	JoinResultUnknown   = 0
	JoinResultOK        = 1
	JoinResultNotExist  = 2
	JoinResultFull      = 3
	JoinResultBlacklist = 4
	JoinResultKicked    = 5
)

// JoinNotify is the member-joined notice (cmd 9): user and group sit at the
// top level, as the J-IM page reads them.
type JoinNotify struct {
	Code    Status `json:"code"`
	Command Cmd    `json:"command"`
	Group   string `json:"group"`
	Msg     string `json:"msg"`
	User    *User  `json:"user"`
}

// ExitNotifyData is the data of the member-left notice (cmd 10).
type ExitNotifyData struct {
	Group string `json:"group"`
	User  *User  `json:"user"`
}

// MessageData is the data of the get-message reply (cmd 20). Both maps are
// always present.
type MessageData struct {
	Friends map[string][]*ChatBody `json:"friends"`
	Groups  map[string][]*ChatBody `json:"groups"`
	UserID  string                 `json:"userId"`
}

// ChatAck is the data jim adds to the sender's cmd-12 reply: the server message
// id and the sequence number in the conversation (J-IM clients ignore it).
type ChatAck struct {
	ClientID string `json:"clientId,omitempty"`
	ID       string `json:"id"`
	Seq      uint64 `json:"seq"`
}

// AppendResp appends r encoded as Marshal encodes it. Encoding into a
// buffer the caller sized saves Marshal's copy of its result.
func AppendResp(dst []byte, r *Resp) ([]byte, error) {
	n := len(dst)
	if err := encoder.EncodeInto(&dst, r, encoder.ValidateString); err != nil {
		return dst[:n], err
	}
	return dst, nil
}

// StatusResp encodes the common reply {"code","command","msg"} for a status.
func StatusResp(cmd Cmd, s Status) []byte {
	b, _ := jsonAPI.Marshal(&Resp{Code: s, Command: cmd, Msg: s.Msg()})
	return b
}

// HTTPStatusResp encodes J-IM's HTTP API reply, which has no command field.
func HTTPStatusResp(s Status) []byte {
	b, _ := jsonAPI.Marshal(&struct {
		Code Status `json:"code"`
		Data any    `json:"data,omitempty"`
		Msg  string `json:"msg"`
	}{Code: s, Msg: s.Msg()})
	return b
}

// AppendChatForward appends the cmd-11 wrapper receivers get,
// {"command":11,"data":<chat>}, encoding the chat body once.
func AppendChatForward(dst []byte, c *ChatBody) ([]byte, error) {
	n := len(dst)
	dst = append(dst, `{"command":11,"data":`...)
	// Encoding straight into dst saves the intermediate copy Marshal makes.
	if err := encoder.EncodeInto(&dst, c, encoder.ValidateString); err != nil {
		return dst[:n], err
	}
	return append(dst, '}'), nil
}

// ChatForwardLen is about the length of c's AppendChatForward encoding,
// enough for one allocation to hold it unless much of the text needs
// escaping. Growing from a small buffer took several allocations per
// message, the largest allocation cost of a private chat.
func ChatForwardLen(c *ChatBody) int {
	// The wrapper, every field name and the numbers at their longest.
	const fixed = 200
	text := len(c.Content) + len(c.From) + len(c.GroupID) + len(c.ID) + len(c.To)
	return fixed + text + text/8 + len(c.Extras)
}

// Fixed replies, encoded once.
var (
	// HeartbeatRespJSON is J-IM's heartbeat reply.
	HeartbeatRespJSON = []byte(`{"command":13,"data":{"hbbyte":-128}}`)
	// HandshakeRespJSON is J-IM's handshake reply.
	HandshakeRespJSON = []byte(`{"command":2,"data":{"hbyte":-127}}`)
)
