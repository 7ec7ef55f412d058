package codec

// Cmd is a J-IM command code. On the TCP wire it is one signed byte, so codes
// 0..127 are usable there; in JSON it is the "cmd" (requests) or "command"
// (replies) number.
type Cmd int8

// The J-IM command table (jim-protocol §1). Requests are odd-numbered in
// general; replies are the request code plus one, except heartbeat (13→13) and
// close (14→14), and forwarded chat, which receivers get under CmdChatReq.
const (
	CmdUnknown         Cmd = 0
	CmdHandshakeReq    Cmd = 1
	CmdHandshakeResp   Cmd = 2
	CmdAuthReq         Cmd = 3
	CmdAuthResp        Cmd = 4
	CmdLoginReq        Cmd = 5
	CmdLoginResp       Cmd = 6
	CmdJoinGroupReq    Cmd = 7
	CmdJoinGroupResp   Cmd = 8
	CmdJoinGroupNotify Cmd = 9
	CmdExitGroupNotify Cmd = 10
	CmdChatReq         Cmd = 11
	CmdChatResp        Cmd = 12
	CmdHeartbeatReq    Cmd = 13
	CmdCloseReq        Cmd = 14
	CmdCancelMsgReq    Cmd = 15
	CmdCancelMsgResp   Cmd = 16
	CmdGetUserReq      Cmd = 17
	CmdGetUserResp     Cmd = 18
	CmdGetMessageReq   Cmd = 19
	CmdGetMessageResp  Cmd = 20
	CmdExitGroupReq    Cmd = 21 // jim extension: leave a group for good.
	maxKnownCmd            = CmdExitGroupReq
)

var cmdNames = [...]string{
	"unknown", "handshake_req", "handshake_resp", "auth_req", "auth_resp",
	"login_req", "login_resp", "join_group_req", "join_group_resp",
	"join_group_notify", "exit_group_notify", "chat_req", "chat_resp",
	"heartbeat", "close_req", "cancel_msg_req", "cancel_msg_resp",
	"get_user_req", "get_user_resp", "get_message_req", "get_message_resp",
	"exit_group_req",
}

// String names the command for logs and metrics labels.
func (c Cmd) String() string {
	if c >= 0 && c <= maxKnownCmd {
		return cmdNames[c]
	}
	return "cmd_other"
}

// Known reports whether c is in jim's command table (J-IM's 0..20 plus jim's
// extensions).
func (c Cmd) Known() bool { return c >= 0 && c <= maxKnownCmd }
