/** The export was asked for something that cannot be done; the message says what and how to fix it. */
export class ExportError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ExportError';
  }
}
