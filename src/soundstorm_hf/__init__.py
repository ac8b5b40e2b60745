"""SoundStorm for the Hugging Face ecosystem."""
