"""posekit.io: everything that reads or writes outside the process.

Images, video, atomic output files, downloads and the cache (``hub``), the COCO download, PoseTrack files.
Imports from ``posekit.core`` only.
"""
