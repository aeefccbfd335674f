"""The base layer every other layer stands on: roles, model settings, the local-model process, the error root,
wire keys and the transport settings both sides of the contract use. It imports nothing of judgeopt's but the
contract (``judgeopt.v1``)."""
