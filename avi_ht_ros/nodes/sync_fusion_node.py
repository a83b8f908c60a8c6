"""``sync_node`` and ``fusion_node`` in one process: each synchronized frame is a function call.

The two nodes keep their names (``glove_camera_sync``, ``hand_fusion``), parameters, topics and
``/diagnostics``; what changes is the hop between them. As separate processes every camera
frame crosses DDS twice as a ~300 kB message (camera → sync, then the SyncedFrame with the image
→ fusion: built, serialized, sent, deserialized) and the two processes compete for the CPU the
inference needs. Here the sync node hands the image and camera-info messages and its
:class:`~avi_ht_ros.tracker.sync.ImuWindow` to the fusion node's tracking thread
(:meth:`FusionNode.start_handoff_worker`): one executor runs both nodes' callbacks, the
tracking thread takes the newest frame (a frame overtaken while the previous one is tracked is
skipped and counted, as the separate fusion node's keep-last-1 subscription does: a late frame
is never queued behind) and runs beside the callbacks (ONNX Runtime releases the GIL), and
``synced_frame`` is still published whenever something subscribes to it (a recorder, a probe).
A camera frame that arrives before the glove samples around its stamp (the glove path is the
slower one) is handed over at once as well: while the synchronizer waits for them, the tracking
thread crops it and runs the network's vision half (fusion parameter ``prefetch_vision``,
:meth:`HandTracker.prepare`); the complete frame then needs only the fusion half.
rclpy has no intra-process transport or component container for Python nodes; this is the
equivalent for this pair. The launch files start it by default (``composed:=false`` starts the
two separate processes).

Parameters: those of ``sync_node`` and ``fusion_node`` (README), from both nodes' config files;
the names the two share (``side``, ``glove_config``) must agree. Do not remap ``__node`` (it
would rename both nodes); remap the namespace as for the separate nodes.
"""
from __future__ import annotations

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.nodes import base
from avi_ht_ros.nodes.fusion_node import FusionNode
from avi_ht_ros.nodes.sync_node import SyncNode


def make_nodes(**kwargs) -> tuple[SyncNode, FusionNode]:
    """The sync node with the fusion node as its frame sink (``kwargs`` go to both nodes)."""
    sync = SyncNode(**kwargs)
    try:
        fusion = FusionNode(**kwargs)
    except BaseException:
        sync.destroy_node()
        raise
    shared = ("side", "glove_config")
    differing = [name for name in shared if getattr(sync.params, name) != getattr(fusion.params, name)]
    if differing:
        values = ", ".join(f"{name}: {getattr(sync.params, name)!r} vs {getattr(fusion.params, name)!r}"
                           for name in differing)
        sync.destroy_node()
        fusion.destroy_node()
        raise ConfigError("sync_fusion_node", f"the sync and fusion nodes must serve the same hand and glove "
                                              f"({values})")
    # frames come by call; the fusion node's subscription would make the sync node build them for it
    fusion.destroy_subscription(fusion.synced_subscription)
    sync.frame_sink, sync.frame_prefetch = fusion.start_handoff_worker()
    return sync, fusion


def main(args=None) -> int:
    return base.run_node(make_nodes, args)


if __name__ == "__main__":
    raise SystemExit(main())
