"""Video and audio (MP4/MOV/M4A, AVI, MPEG-TS/AVCHD, MP3): ffmpeg remuxes only
the audio and video streams into a new container without metadata (``-c copy``,
never re-encoded), and the per-packet SHA-256 of every kept stream is the
original's."""
from __future__ import annotations

import os
import pathlib
import subprocess
from collections.abc import Sequence

from agent.card.model import MediaFile
from agent.card.strip.common import FFMPEG_TIMEOUT_S, Written, fail, spool_pair

#: Video and audio remuxed by ffmpeg: (demuxer of the original, muxer of the copy,
#: extra muxer options). Only audio and video streams are kept (see :func:`_remux`).
REMUX: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "video/mp4": ("mov", "mp4", ()),
    "video/quicktime": ("mov", "mov", ()),
    "audio/mp4": ("mov", "ipod", ()),
    "video/x-msvideo": ("avi", "avi", ()),
    "video/mp2t": ("mpegts", "mpegts", ()),
    # No ID3v2 tag, no Xing/LAME header frame (it names the encoder).
    "audio/mpeg": ("mp3", "mp3", ("-id3v2_version", "0", "-write_xing", "0")),
}


def remux(media: MediaFile, spool_dir: pathlib.Path) -> Written:
    """Copy only the audio/video streams into a new container without metadata.

    ``-map_metadata -1 -map_chapters -1`` drop global, stream and chapter
    metadata; ``-fflags +bitexact`` makes the muxers write zero creation and
    modification dates and no encoder name; ``-c copy`` never re-encodes.
    Timed-metadata tracks (GPS, telemetry, camera motion), subtitles, data
    streams and cover art are not mapped, so they are not in the copy.
    """
    demuxer, muxer, options = REMUX[media.media_type]
    work, out = spool_pair(media, spool_dir)
    try:
        # 0:V is every video stream that is not a picture (cover art, thumbnail);
        # ffmpeg refuses to write a file left with no stream.
        maps = ["-map", "0:V?", "-map", "0:a?"]
        attempts = [(muxer, options)]
        if muxer == "mp4":
            # The mp4 muxer refuses some codecs cameras put in MP4 (Sony XAVC S:
            # LPCM audio); the QuickTime muxer takes them, under the original's brand.
            with open(work, "rb") as fh:
                brand = fh.read(12)[8:12].decode("latin-1").strip() or "isom"
            attempts.append(("mov", (*options, "-brand", brand)))
        for muxer_name, muxer_options in attempts:
            # One read of the original feeds two outputs: the copy, and the
            # per-packet hashes of what went into it.
            cmd = ["ffmpeg", "-nostdin", "-v", "error", "-protocol_whitelist", "file", "-f", demuxer,
                   "-i", str(work), *maps, "-c", "copy", "-map_metadata", "-1", "-map_chapters", "-1",
                   "-fflags", "+bitexact", *muxer_options, "-f", muxer_name, str(out),
                   *maps, "-c", "copy", "-f", "streamhash", "-hash", "sha256", "-"]
            done = subprocess.run(cmd, capture_output=True, timeout=FFMPEG_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
            if done.returncode == 0 and out.exists():
                break
            out.unlink(missing_ok=True)
        else:
            err = done.stderr.decode("utf-8", "replace").strip()
            raise fail(media, f"ffmpeg could not remux: {err or done.returncode}")
        os.chmod(out, 0o600)
        try:
            a = done.stdout.decode()
            b = streamhash(out, demuxer)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            raise fail(media, f"streams cannot be compared: {exc}") from None
        if not a.strip() or a != b:
            raise fail(media, "audio/video packets differ from the original")
        return Written(media, out)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    finally:
        work.unlink(missing_ok=True)


def streamhash(path: pathlib.Path, demuxer: str = "mov", maps: Sequence[str] = ("-map", "0")) -> str:
    """ffmpeg's per-stream SHA-256 of every packet of the mapped streams,
    without decoding. The demuxer is named, never guessed from the content."""
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-protocol_whitelist", "file", "-f", demuxer,
           "-i", str(path), *maps, "-c", "copy", "-f", "streamhash", "-hash", "sha256", "-"]
    done = subprocess.run(cmd, capture_output=True, timeout=FFMPEG_TIMEOUT_S, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode("utf-8", "replace").strip() or str(done.returncode))
    return done.stdout.decode()
