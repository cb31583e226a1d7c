"""verify_receipts: every file needs its own matching receipt, or nothing is wiped."""
import pytest

from agent.card.model import MediaKind, Receipt, StageError
from agent.card.progress import SentFile
from agent.card.reasons import Reason
from agent.card.verify import verify_receipts


def _stripped(path: str, sha: str, size: int) -> SentFile:
    return SentFile(relative_path=path, sha256=sha, size=size, kind=MediaKind.IMAGE,
                    media_type="image/jpeg", original_sha256="0" * 64, original_size=size + 100)


A = _stripped("DCIM/100CANON/IMG_0001.JPG", "a" * 64, 10)
B = _stripped("DCIM/100CANON/IMG_0002.JPG", "b" * 64, 20)


def _receipt(f: SentFile, **changes) -> Receipt:
    fields = dict(relative_path=f.relative_path, sha256=f.sha256, size=f.size,
                  blob_id=f"blobs/{f.sha256}", media_item_id="m-" + f.sha256[:4])
    fields.update(changes)
    return Receipt(**fields)


def test_matching_receipts_pass():
    verify_receipts([A, B], [_receipt(B), _receipt(A)])


@pytest.mark.parametrize(
    "receipts, expected",
    [
        ([_receipt(A)], "no receipt for DCIM/100CANON/IMG_0002.JPG"),
        ([_receipt(A), _receipt(B, sha256="c" * 64)], "archive holds sha256"),
        ([_receipt(A), _receipt(B, size=19)], "archive holds 19 bytes"),
        ([_receipt(A), _receipt(B, blob_id="")], "lacks a blob"),
        ([_receipt(A), _receipt(B, media_item_id="")], "lacks a blob or media item id"),
        ([_receipt(A), _receipt(A), _receipt(B)], "two receipts"),
        ([_receipt(A), _receipt(B), _receipt(B, relative_path="X.JPG")], "not sent: X.JPG"),
        ([], "no receipt"),
    ],
)
def test_any_gap_refuses(receipts, expected):
    with pytest.raises(StageError) as err:
        verify_receipts([A, B], receipts)
    assert err.value.reason == Reason.ARCHIVE_REJECTED
    assert expected in err.value.detail


def test_same_bytes_twice_need_two_receipts():
    # Dedup on the wire must not let one receipt stand for two card files.
    twin = _stripped("DCIM/100CANON/IMG_0003.JPG", A.sha256, A.size)
    with pytest.raises(StageError):
        verify_receipts([A, twin], [_receipt(A)])
    verify_receipts([A, twin], [_receipt(A), _receipt(twin)])
