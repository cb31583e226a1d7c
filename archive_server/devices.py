"""Each department's registered capture devices (R6), kept in the archive and
handed to the department's agents with every heartbeat answer
(protos/bildsluss/v1/agents.proto, "Registered capture devices"), so that a
region's capture PCs are not edited one by one (issue 17).

A device is a make and model as its files name them (EXIF ``Make``/``Model``)
and optionally a serial number; the agent matches them case- and
space-insensitively (``agent/card/devices.py``), so one device is registered
once however it is typed (the ``*_key`` columns). Adding and removing go through
the one authorization gate and audit writer (right ``admin.devices``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from archive_server import validation as v
from archive_server.authz import Principal, operation
from archive_server.cases import iso
from archive_server.errors import InvalidArgument, NotFound
from archive_server.models import Department, DepartmentDevice

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from archive_server.db import Database

_MAX = 255


def _clean(value: str, what: str, *, required: bool) -> str:
    text = " ".join((value or "").split())
    if required and not text:
        raise InvalidArgument(f"{what} must not be empty: give it as the camera writes it (exiftool -Make -Model)")
    if len(text) > _MAX:
        raise InvalidArgument(f"{what} is longer than {_MAX} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise InvalidArgument(f"{what} contains a control character")
    return text


def _department(s: "Session", hsa_id: str) -> Department:
    hsa = v.hsa_id(hsa_id.strip(), "--department")
    dep = s.execute(sa.select(Department).where(Department.hsa_id == hsa)).scalar_one_or_none()
    if dep is None:
        raise NotFound(f"unknown department {hsa} (admin department add)")
    return dep


def _match(dep: Department, make: str, model: str, serial: str) -> "sa.Select[DepartmentDevice]":
    return sa.select(DepartmentDevice).where(
        DepartmentDevice.department_id == dep.id, DepartmentDevice.make_key == make.casefold(),
        DepartmentDevice.model_key == model.casefold(), DepartmentDevice.serial_key == serial.casefold())


def add_device(db: "Database", principal: Principal, department: str, make: str, model: str,
               serial: str = "") -> str:
    """Register a capture device for ``department``; returns added or unchanged."""
    make, model = _clean(make, "--make", required=True), _clean(model, "--model", required=True)
    serial = _clean(serial, "--serial", required=False)
    with operation(db, principal, "device.added") as op:
        op.require("admin.devices")
        dep = _department(op.session, department)
        op.department = dep.hsa_id
        op.target = f"department:{dep.hsa_id}"
        op.details.update(make=make, model=model, serial=serial)
        if op.session.execute(_match(dep, make, model, serial)).scalar_one_or_none() is not None:
            op.action = "device.unchanged"
            return "unchanged"
        op.session.add(DepartmentDevice(
            department_id=dep.id, make=make, model=model, serial=serial, make_key=make.casefold(),
            model_key=model.casefold(), serial_key=serial.casefold(), added_by=principal.actor))
        return "added"


def remove_device(db: "Database", principal: Principal, department: str, make: str, model: str,
                  serial: str = "") -> str:
    """Remove a registered device (exactly as registered, serial included); its
    media are refused by the department's agents from their next heartbeat on."""
    make, model = _clean(make, "--make", required=True), _clean(model, "--model", required=True)
    serial = _clean(serial, "--serial", required=False)
    with operation(db, principal, "device.removed") as op:
        op.require("admin.devices")
        dep = _department(op.session, department)
        op.department = dep.hsa_id
        op.target = f"department:{dep.hsa_id}"
        op.details.update(make=make, model=model, serial=serial)
        row = op.session.execute(_match(dep, make, model, serial)).scalar_one_or_none()
        if row is None:
            raise NotFound(f"{make} {model}{f' serial {serial}' if serial else ''} is not registered in "
                           f"{dep.hsa_id} (admin device list --department {dep.hsa_id})")
        op.session.delete(row)
        return "removed"


def list_devices(db: "Database", principal: Principal, department: str | None = None) -> list[dict[str, Any]]:
    """Registered devices, by department, make, model and serial."""
    with operation(db, principal, "device.list") as op:
        op.require("admin.devices")
        query = (sa.select(DepartmentDevice, Department.hsa_id)
                 .join(Department, Department.id == DepartmentDevice.department_id)
                 .order_by(Department.hsa_id, DepartmentDevice.make_key, DepartmentDevice.model_key,
                           DepartmentDevice.serial_key))
        if department is not None:
            dep = _department(op.session, department)
            op.department = dep.hsa_id
            query = query.where(DepartmentDevice.department_id == dep.id)
        return [{"department": hsa, "make": d.make, "model": d.model, "serial": d.serial,
                 "added_at": iso(d.added_at), "added_by": d.added_by}
                for d, hsa in op.session.execute(query).all()]


def devices_of(db: "Database", hsa_id: str) -> list[tuple[str, str, str]]:
    """(make, model, serial) of every device registered for the department:
    what its agents receive with each heartbeat answer (no principal: the
    agent's call was admitted by the certificate gate)."""
    with db.read() as s:
        return [tuple(row) for row in s.execute(  # type: ignore[misc]
            sa.select(DepartmentDevice.make, DepartmentDevice.model, DepartmentDevice.serial)
            .join(Department, Department.id == DepartmentDevice.department_id)
            .where(Department.hsa_id == hsa_id)
            .order_by(DepartmentDevice.make_key, DepartmentDevice.model_key, DepartmentDevice.serial_key))]
