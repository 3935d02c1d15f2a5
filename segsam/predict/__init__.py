"""``segsam predict``: segment a user's own 3D scan with a trained (or zero-shot) method.

A NIfTI / MHA / NRRD file or a DICOM series folder goes in; a label volume on the
input's own grid (same size, spacing, origin, direction and voxel order) comes out,
with vocabulary class ids as values and a JSON sidecar. The scan is prepared as the
training slices were (:mod:`segsam.data.slicing`): reoriented to LPS, resampled
in-plane to square pixels (the axial planes are kept), intensities to uint8 with the
config's CT window or MR percentiles; each axial plane goes through the model once,
and the per-class probabilities are mapped back onto the input's grid.

Modules:
    scans: which scans a folder holds and where their outputs and prompt files go
        (no heavy imports: the workflow reads it at start-up).
    prompts: the prompt file (JSON or CSV; boxes and points per class, in voxel,
        LPS or RAS coordinates) and its placement on the scan's axial planes.
    volume: reading a scan, the training preprocessing, and its exact undoing.
    model: the method's model and weights (workflow folder, MLflow run or file).
    run: the per-plane loop, the overlap rule, and the outputs.

Nothing is re-exported here, so that the workflow's start-up imports only ``scans``.
"""
